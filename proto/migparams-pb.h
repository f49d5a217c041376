/* The protobuf form of the migration parameters: MigParams (core/migparams.h)
 * <-> drover.v1.MigrationParams, the one mapping that the agent (Migrate,
 * MigratePrepare, its calls to a peer) and the coordinator (its API, its
 * calls to agents) share.  It lives beside the generated code, in
 * libdrover-migparams-pb, since core/ does not see protobuf.
 *
 * The mapping is member by member and adds nothing: a zero member stays zero,
 * which both forms read as "the default".  Code that acts on the parameters
 * (the agents) calls mig_params_defaults() after reading; code that only
 * passes them on (the coordinator) keeps the zeros, so a job shows what was
 * asked.  PostcopyMode and PostcopyPolicy number their values alike; an
 * unknown mode reads as POSTCOPY_POLICY_NEVER.
 */
#pragma once

#include "agent.pb-c.h"
#include "migparams.h"

/* Fill @out (initialised here) from @in. */
void mig_params_to_pb(const MigParams *in, Drover__V1__MigrationParams *out);
/* Fill @out from @in; a NULL @in (not given) gives all zeros. */
void mig_params_from_pb(const Drover__V1__MigrationParams *in, MigParams *out);
