package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// configuredApp deploys a Deployment whose container has every kind of configuration a real app
// has: a literal env var, envFrom a configMap and a secret, a secretKeyRef, a fieldRef, a configMap
// volume, a secret volume and (by default) the service-account token.
func configuredApp(t *testing.T, ns string) {
	t.Helper()
	apply(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  LOG_LEVEL: debug
  settings.yaml: |
    color: green
    retries: 3
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData:
  DB_PASSWORD: "s3cr3t $HOME \"quoted\""
  api-key: key-123
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata:
      labels: {app: api}
      annotations: {kubectl.kubernetes.io/default-container: app}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: sidecar
        image: %[1]s
        args: ["-http=:9090", "-https=", "-echo=", "-health=:9091"]
      - name: app
        image: %[1]s
        imagePullPolicy: IfNotPresent
        args: ["-http=:8080", "-https=", "-echo=", "-health=:8081"]
        env:
        - {name: GREETING, value: "hello world"}
        - name: API_KEY
          valueFrom: {secretKeyRef: {name: app-secret, key: api-key}}
        - name: MY_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        envFrom:
        - configMapRef: {name: app-config}
        - secretRef: {name: app-secret}
        volumeMounts:
        - {name: config, mountPath: /etc/app}
        - {name: secret, mountPath: /etc/secret}
        readinessProbe: {httpGet: {path: /healthz, port: 8081}, periodSeconds: 1}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
      volumes:
      - name: config
        configMap: {name: app-config}
      - name: secret
        secret: {secretName: app-secret}
`, testappImage))
	kubectl(t, "rollout", "status", "-n", ns, "deployment/api", "--timeout=120s")
}

// TestRunFromWorkload runs a child like the Deployment `api`: its environment and volume contents
// must match what the kubelet gives the real pod, with private file modes, and be gone after exit.
func TestRunFromWorkload(t *testing.T) {
	ns := namespace(t)
	configuredApp(t, ns)
	envFile := filepath.Join(workDir, "api-"+randomSuffix()+".env")
	script := `
echo "GREETING=$GREETING"
echo "API_KEY=$API_KEY"
echo "MY_NAMESPACE=$MY_NAMESPACE"
echo "LOG_LEVEL=$LOG_LEVEL"
echo "DB_PASSWORD=$DB_PASSWORD"
echo "ROOT=$TP_ROOT"
echo "MOUNTS=$TP_MOUNTS"
echo "SETTINGS=$(tr '\n' ';' < "$TP_ROOT/etc/app/settings.yaml")"
echo "SECRETFILE=$(cat "$TP_ROOT/etc/secret/api-key")"
echo "TOKEN_BYTES=$(wc -c < "$TP_ROOT/var/run/secrets/kubernetes.io/serviceaccount/token")"
echo "MODES=$(stat -c '%a' "$TP_ROOT" "$TP_ROOT/etc/secret" "$TP_ROOT/etc/secret/api-key" | tr '\n' ' ')"
echo "SERVICE_HOST=$KUBERNETES_SERVICE_HOST"
`
	r := tp(t, "run", "-n", ns, "--quiet", "--from", "deployment/api", "--env-file", envFile, "--", "sh", "-ec", script)
	if r.Code != 0 {
		t.Fatalf("kubectl tp run --from: %s", r)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		k, v, _ := strings.Cut(line, "=")
		out[k] = v
	}
	want := map[string]string{
		"GREETING":     "hello world",
		"API_KEY":      "key-123",
		"MY_NAMESPACE": ns,
		"LOG_LEVEL":    "debug",
		"DB_PASSWORD":  `s3cr3t $HOME "quoted"`,
		"SETTINGS":     "color: green;retries: 3;",
		"SECRETFILE":   "key-123",
		"MODES":        "700 700 600 ",
		"SERVICE_HOST": "10.96.0.1",
	}
	for k, v := range want {
		if out[k] != v {
			t.Errorf("%s = %q, want %q", k, out[k], v)
		}
	}
	if n := out["TOKEN_BYTES"]; n == "" || n == "0" {
		t.Errorf("service-account token not copied (bytes %q)", n)
	}
	for _, m := range []string{"/etc/app", "/etc/secret", "/var/run/secrets/kubernetes.io/serviceaccount"} {
		if !strings.Contains(out["MOUNTS"], m) {
			t.Errorf("TP_MOUNTS %q lacks %s", out["MOUNTS"], m)
		}
	}
	if root := out["ROOT"]; root == "" {
		t.Error("TP_ROOT not set")
	} else if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("local copy %s still exists after exit (err %v)", root, err)
	}
	// The env file holds the same values, quoted so that they read back exactly.
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatalf("--env-file not written: %v", err)
	}
	if !strings.Contains(string(b), "API_KEY=") || strings.Contains(string(b), "TP_TOKEN") {
		t.Errorf("env file content unexpected:\n%s", b)
	}
	if fi, err := os.Stat(envFile); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("env file mode %o, want 600", fi.Mode().Perm())
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestRunFromVolumeRefresh updates the configMap while a session runs: the local copy follows.
func TestRunFromVolumeRefresh(t *testing.T) {
	ns := namespace(t)
	configuredApp(t, ns)
	marker := filepath.Join(workDir, "refresh-"+randomSuffix())
	script := `f="$TP_ROOT/etc/app/LOG_LEVEL"; cat "$f"; echo; touch ` + marker + `
start=$(date +%s)
while [ "$(cat "$f")" != "trace" ]; do
  if [ $(( $(date +%s) - start )) -gt 60 ]; then echo timeout; exit 3; fi
  sleep 0.2
done
echo "trace after $(( $(date +%s) - start ))s"`
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- run(tpCmd(ctx, "run", "-n", ns, "--quiet", "--from", "api", "--", "sh", "-c", script))
	}()
	waitFor(t, 60*time.Second, "the session to start", func() error { _, err := os.Stat(marker); return err })
	defer os.Remove(marker)
	kubectl(t, "patch", "configmap", "app-config", "-n", ns, "--type=merge", "-p", `{"data":{"LOG_LEVEL":"trace"}}`)
	r := <-done
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "debug\n") || !strings.Contains(r.Stdout, "trace after") {
		t.Fatalf("configMap update did not reach the local copy: %s", r)
	}
	t.Logf("configMap update visible locally: %s", strings.TrimSpace(strings.Split(r.Stdout, "\n")[1]))
}

// TestRunFromBadInput: unknown workload, unknown container and an unsupported type are each one
// clear error, and nothing is left in the cluster.
func TestRunFromBadInput(t *testing.T) {
	ns := namespace(t)
	configuredApp(t, ns)
	cases := []struct {
		name, from, stderr string
	}{
		{"unknown workload", "deployment/nope", `deployment/nope not found in namespace`},
		{"unknown container", "deployment/api:nope", `container "nope" not found; valid containers: sidecar, app`},
		{"unsupported type", "cronjob/api", `workload type "cronjob" is not supported`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tp(t, "run", "-n", ns, "--from", tc.from, "--", "true")
			if r.Code == 0 || !strings.Contains(r.Stderr, tc.stderr) {
				t.Fatalf("want a non-zero exit and %q\n%s", tc.stderr, r)
			}
			noPodsLeft(t, ns, 20*time.Second)
		})
	}
}
