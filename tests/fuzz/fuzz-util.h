/* What the libFuzzer harnesses of tests/fuzz share (docs/fuzzing.md).
 *
 * fuzz_init() quiets the logs once per process.  fuzz_tmpdir() is one
 * private folder per process, removed at exit.  fuzz_memfd_path() turns the
 * input into a file without touching the disk, for readers that only take
 * a path.
 *
 * FuzzPeer is a scripted peer for the channels (QMP, QGA): it listens on a
 * unix socket in fuzz_tmpdir() for the whole process and, for each input,
 * plays it back on its own thread.  The input is cut into segments at each
 * line "%%" (the line's own "\n" ends the segment before it).  With @greet,
 * segment 0 is written as soon as the client connects (QMP's greeting);
 * then each request line the client writes is answered with the next
 * segment, in which every "@ID@" is replaced by the last "id" number of
 * that request (the random id of QGA's guest-sync-delimited, the counter of
 * QMP).  When the segments run out the peer closes the connection, and
 * closes every later one at once, so a client that reconnects sees EOF
 * rather than a timeout.  Nothing of a run outlives fuzz_peer_finish(): its
 * thread is joined, its connections and any stale ones in the backlog are
 * closed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Logs off (errors of hostile input are expected, not news). */
void fuzz_init(void);

/* A private folder for this process, created on first use, removed (with
 * what is in it) at exit.  Aborts when it cannot be made. */
const char *fuzz_tmpdir(void);

/* Remove everything in @dir (one level of files and folders of files),
 * keeping @dir. */
void fuzz_empty_dir(const char *dir);

/* @data as an anonymous file: the fd (close it) and its /proc/self/fd path
 * in @path.  Aborts on failure (a harness bug, not a finding). */
int fuzz_memfd_path(const uint8_t *data, size_t size, char path[64]);

typedef struct FuzzPeer FuzzPeer;

/* The process's peer, listening at fuzz_peer_path() (created once). */
FuzzPeer *fuzz_peer_get(void);
const char *fuzz_peer_path(FuzzPeer *p);
/* Start playing @data (copied) to the next client(s) on the peer's thread. */
void fuzz_peer_serve(FuzzPeer *p, const uint8_t *data, size_t size, bool greet);
/* Stop the run: join the thread, close every connection. */
void fuzz_peer_finish(FuzzPeer *p);
