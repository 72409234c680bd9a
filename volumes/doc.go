// Package volumes copies the contents of the target workload's volumes to a private
// local directory and keeps the copy fresh, so a program run locally finds its
// configMap, secret, projected service-account token, downwardAPI, emptyDir and PVC
// files under the same paths below that directory.
//
// A [Mirror] fetches a tar archive of the mount paths from podshim (see
// [tunnel.Client.Files] for the layout), which sends the resolved view of each volume:
// the visible names of an atomic-writer volume, not its "..data" internals, and no
// symbolic link pointing outside the volume. The Mirror writes each mount's files
// below Root+mountPath, with directories 0700 and files 0600 whatever the remote
// modes, atomically (a temporary file and a rename) and only when the content
// changed; it removes files it wrote earlier that disappeared remotely, and it never
// writes outside Root or through a symbolic link. [Mirror.Run] repeats the copy every
// Interval. [CheckRoot] validates a directory chosen by the user.
//
// It leaves out: writing back (a local change to a copied file is undone by the
// next Sync and never reaches the pod), live mounts (no FUSE or sshfs;
// an update appears locally within one Interval), the remote owners, modes,
// symbolic links, empty directories and special files (only regular files are
// copied; the mount directories themselves are created), top-level names starting
// with ".." in any volume (they are the atomic writer's internals), volumes larger
// than the byte limit (reported through OnSkip and not copied; a copy made while
// they were smaller is kept), and deciding which mounts to mirror or where (the
// caller, which reads the pod template, passes Mounts and Root). It imports nothing
// from k8s.io.
package volumes
