// Package envcapture carries the environment of the workload a session stands in for to
// the local child process, and writes it to files that IDEs and tools can load.
//
// The environment is captured by podshim in the proxy pod: the kubelet computes it from
// the pod template (env, envFrom, secretKeyRef, configMapKeyRef, fieldRef,
// resourceFieldRef and service-link variables), podshim reports its own process
// environment over the tunnel, and this package
//
//   - drops what belongs to the container rather than the app ([Filter], [MachineVars]),
//   - lays the result over the local environment for the child ([Merge]),
//   - writes it as a docker/compose .env file, POSIX shell exports or JSON ([Write],
//     [WriteFile]) and reads those files back ([Read]).
//
// It leaves out fetching the environment (see tunnel.Client.Env), deciding which
// workload to copy and building the proxy pod (package session), volume contents
// (package volumes), and any rewriting of values: cluster addresses in variables such as
// KUBERNETES_SERVICE_HOST or the service-link *_PORT URLs are passed through unchanged,
// because the child reaches them through the session's proxies. Variable names are
// compared case-sensitively, as on Linux. Values are carried as UTF-8 text; bytes that
// are not valid UTF-8 do not survive the trip from the pod.
package envcapture
