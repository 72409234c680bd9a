// Package envcapture will carry the environment of the workload a session stands in for (what the
// kubelet computed for the proxy pod) to the local child process.
//
// Status: not built yet; `kubectl tp run` gives the child only the session's own variables. It is
// the subject of the "Environment and volumes of the target workload" issue.
package envcapture
