// Package capture is kubectl-tp's transparent mode: it makes every program of a session reach the
// cluster, whether or not it honours proxy variables, without root, LD_PRELOAD or namespaces.
//
// The child is started through a re-exec of kubectl-tp ([HelperMain]) that sets no_new_privs,
// installs a seccomp filter ([Filter]) reporting connect(2) to a user-notification listener and
// hands that listener to the [Supervisor] in the parent. The supervisor reads each destination
// from the caller's memory, asks the [Router] where it goes and either lets the call run as is,
// or takes a duplicate of the caller's very socket (pidfd_getfd) and connects it to a loopback
// listener: the [Redirector], which carries it through the tunnel, or the session's DNS server
// for port 53. Cluster names are answered by [Resolver] with synthetic addresses from a [Pool],
// mapped back to names when they are dialled, so they cannot collide with the laptop's routes.
//
// What it leaves out: UDP other than DNS (refused for cluster destinations), io_uring (its
// setup fails with ENOSYS so libraries fall back to plain syscalls), 32-bit programs' connects
// (refused), musl's unconnected sendto(2) DNS, getpeername(2) (shows the loopback listener), and
// any operating system but Linux 5.19 or newer on amd64 and arm64 ([Probe] says why not).
package capture
