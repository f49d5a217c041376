/* Tap devices for guest NICs, created and attached to their bridge with
 * ioctls (no external tools).  Taps are persistent (TUNSETPERSIST) so that
 * QEMU, started later, opens them by name and they outlive an agent
 * restart; the agent deletes them when the guest stops.  Needs
 * CAP_NET_ADMIN.  Called with no lock held.
 */
#pragma once

/* Create tap @name (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, persistent), attach it
 * to @bridge and bring it up.  An existing tap of that name is reused.
 * -errno with a detail naming the tap and the bridge. */
int agent_tap_create(const char *name, const char *bridge);
/* Delete tap @name; a missing tap is not an error. */
int agent_tap_delete(const char *name);
/* Whether a network interface of that name exists. */
int agent_netdev_exists(const char *name);
