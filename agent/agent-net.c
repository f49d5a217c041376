/* Tap devices (see agent-net.h). */
#define _GNU_SOURCE
#include "agent-net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"

static int tap_open(const char *name, int *ret_fd) {
        struct ifreq ifr = { 0 };
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return err_set(-errno, "cannot open /dev/net/tun: %m");
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
                int r = -errno;
                close(fd);
                return err_set(r, "cannot create tap %s: %s", name, strerror(-r));
        }
        *ret_fd = fd;
        return 0;
}

int agent_netdev_exists(const char *name) {
        char path[128];
        snprintf(path, sizeof(path), "/sys/class/net/%s", name);
        return access(path, F_OK) == 0;
}

int agent_tap_create(const char *name, const char *bridge) {
        _cleanup_close_ int fd = -1, sock = -1;
        struct ifreq ifr = { 0 };
        int r;

        if (strlen(name) >= IFNAMSIZ || strlen(bridge) >= IFNAMSIZ)
                return err_set(-EINVAL, "interface name too long: %s / %s", name, bridge);
        if (!agent_netdev_exists(bridge))
                return err_set(-ENOENT, "bridge %s does not exist", bridge);
        if ((r = tap_open(name, &fd)) < 0)
                return r;
        if (ioctl(fd, TUNSETPERSIST, 1) < 0)
                return err_set(-errno, "cannot make tap %s persistent: %m", name);

        sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0)
                return err_set(-errno, "socket: %m");
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
        if (ioctl(sock, SIOCGIFINDEX, &ifr) < 0)
                return err_set(-errno, "cannot find tap %s: %m", name);
        int ifindex = ifr.ifr_ifindex;

        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", bridge);
        ifr.ifr_ifindex = ifindex;
        if (ioctl(sock, SIOCBRADDIF, &ifr) < 0 && errno != EBUSY)
                return err_set(-errno, "cannot attach tap %s to bridge %s: %m", name, bridge);

        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
        if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
                return err_set(-errno, "cannot read flags of tap %s: %m", name);
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
                return err_set(-errno, "cannot bring tap %s up: %m", name);
        return 0;
}

int agent_tap_delete(const char *name) {
        _cleanup_close_ int fd = -1;
        int r;
        if (!agent_netdev_exists(name))
                return 0;
        if ((r = tap_open(name, &fd)) < 0)
                return r;
        if (ioctl(fd, TUNSETPERSIST, 0) < 0)
                return err_set(-errno, "cannot delete tap %s: %m", name);
        return 0;
}
