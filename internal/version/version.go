// Package version holds the build-time identity of kubectl-tp and of the podshim image it
// starts. Both binaries are built with the same -ldflags, so a plugin and the podshim it
// defaults to always agree; the tunnel handshake compares them at run time.
//
// It imports nothing from k8s.io, so podshim can use it.
package version

// Version is the release version, set with
// -ldflags "-X github.com/kubectl-tp/kubectl-tp/internal/version.Version=…" (from git describe).
var Version = "dev"

// ImageRepo is the repository of the podshim image, without tag; overridable with ldflags.
var ImageRepo = "ghcr.io/kubectl-tp/podshim"

// Image returns the podshim image reference that this build uses by default.
func Image() string { return ImageRepo + ":" + Version }
