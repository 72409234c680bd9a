// Package kubebuild holds no code: its go.mod pins k8s.io/kubernetes and its staging
// modules so that tests/cluster can build the cluster's binaries from the Go module proxy.
package kubebuild
