package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestClusterHarness proves the cluster the other tests rely on: a Service reached by name from a
// second pod (cluster DNS, kube-proxy, pod network) and a pod reached through kubectl port-forward
// (API server → kubelet streaming).
func TestClusterHarness(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	apply(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: app
    image: %s
    imagePullPolicy: IfNotPresent
    args: ["-http=:8080", "-https=", "-echo=", "-health=:8081"]
    readinessProbe: {httpGet: {path: /healthz, port: 8081}, periodSeconds: 1}
`, testappImage))
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "pod/client", "--timeout=120s")

	port := portForward(t, ns, "pod/client", 8080)
	cases := []struct {
		name, path, want string
	}{
		{"pod through port-forward", "/color", "green"},
		{"service by short name from a second pod", "/fetch?url=http://web:8080/color", "green"},
		{"service by FQDN from a second pod", "/fetch?url=http://web." + ns + ".svc.cluster.local:8080/color", "green"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, tc.path))
			if code != 200 || strings.TrimSpace(body) != tc.want {
				t.Fatalf("GET %s = %d %q, want 200 %q", tc.path, code, body, tc.want)
			}
		})
	}
}
