// Package realpaths shows a session's volume copies at their real mount paths to the child's
// process tree on Linux, so a program that reads /etc/app/config.yaml or client-go's in-cluster
// files under /var/run/secrets/kubernetes.io/serviceaccount runs unmodified. Nothing outside
// the child's own mount namespace changes: the laptop's filesystem and every other process see
// exactly what they saw before.
//
// The child's helper (the capture helper of transparent mode) is started by [Prepare] in a new
// user namespace, mapping the user's own uid and gid to themselves (so the program sees its own
// ids), and a new mount namespace, with CAP_SYS_ADMIN and CAP_SYS_CHROOT as ambient capabilities
// for that namespace only. Before it installs its seccomp filter, the helper calls [Setup],
// which applies the [Mount]s: each copy is bind-mounted read-only (writes fail with EROFS) onto
// its target. A target whose directory does not exist on the laptop (/etc/app,
// /var/run/secrets/…) gets one: the nearest existing directory is shadowed by a tmpfs holding
// recursive bind mounts of every original entry, plus the missing path. The helper then drops
// every capability and executes the program. Since a copy is a directory kept up to date in
// place (package volumes replaces files by rename), updates show up at the real path as they do
// under $TP_ROOT.
//
// What it leaves out: operating systems other than Linux, and machines where unprivileged user
// namespaces are off (user.max_user_namespaces=0, Debian's kernel.unprivileged_userns_clone=0,
// Ubuntu 23.10+'s AppArmor restriction): [Probe] says why, and the caller falls back to $TP_ROOT
// only. It does not virtualize single calls (no seccomp file trapping); it does not reproduce
// the atomic writer's "..data" links (a copy holds the visible names only); a single-file mount
// (a subPath) keeps the content it had at start, as in a pod; targets under /proc, /sys and /dev
// and the root itself are refused. Inside the namespace, files owned by users other than the
// caller show as the overflow uid (nobody), set-uid programs do not gain privileges (as already
// under transparent mode's no_new_privs), and new entries created in a shadowed writable
// directory stay private to the session.
package realpaths
