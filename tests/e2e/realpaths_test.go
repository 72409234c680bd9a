package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// controllerApp deploys `ctl`, a workload as an operator has it: its own ServiceAccount allowed
// to list pods (and nothing else), a configMap at /etc/app, a secret at /etc/creds, a single
// file mounted with subPath and an emptyDir scratch directory.
func controllerApp(t *testing.T, ns string) {
	t.Helper()
	apply(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: ServiceAccount
metadata: {name: lister}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-lister}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lister-lists-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-lister}
subjects: [{kind: ServiceAccount, name: lister}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ctl-config}
data:
  config.yaml: |
    mode: reconcile
    workers: 4
  LOG_LEVEL: debug
---
apiVersion: v1
kind: Secret
metadata: {name: ctl-creds}
stringData: {username: admin, password: hunter2}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ctl}
spec:
  replicas: 1
  selector: {matchLabels: {app: ctl}}
  template:
    metadata: {labels: {app: ctl}}
    spec:
      serviceAccountName: lister
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: app
        image: %[1]s
        imagePullPolicy: IfNotPresent
        args: ["-http=:8080", "-https=", "-echo=", "-health=:8081"]
        volumeMounts:
        - {name: config, mountPath: /etc/app}
        - {name: creds, mountPath: /etc/creds}
        - {name: config, mountPath: /opt/ctl/level.conf, subPath: LOG_LEVEL}
        - {name: scratch, mountPath: /cache}
        readinessProbe: {httpGet: {path: /healthz, port: 8081}, periodSeconds: 1}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
      volumes:
      - name: config
        configMap: {name: ctl-config}
      - name: creds
        secret: {secretName: ctl-creds}
      - name: scratch
        emptyDir: {}
`, testappImage))
	kubectl(t, "rollout", "status", "-n", ns, "deployment/ctl", "--timeout=120s")
}

// mustNotExist fails when a path the tests put at a real path exists on this machine: the test
// could then not tell the session's view from the laptop's.
func mustNotExist(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists on this machine; the test needs it absent", p)
		}
	}
}

// TestRealPathsInClusterConfig is the controller demo: an unmodified client-go program using
// rest.InClusterConfig runs with `--from deployment/ctl` and acts as ctl's ServiceAccount, allowed
// and forbidden exactly as that account is. With --real-paths=false the same program cannot load
// its configuration (the files are only under $TP_ROOT), which shows the first run owed its
// success to the files at their real paths.
func TestRealPathsInClusterConfig(t *testing.T) {
	ns := namespace(t)
	controllerApp(t, ns)
	mustNotExist(t, "/var/run/secrets/kubernetes.io")

	r := tp(t, "run", "-n", ns, "--quiet", "--from", "deployment/ctl", "--", "incluster")
	if r.Code != 0 {
		t.Fatalf("the in-cluster program failed: %s", r)
	}
	got := lines(r.Stdout)
	if pods := got["pods"]; !strings.Contains(pods, "ctl-") {
		t.Errorf("pods of %s = %q, want ctl's pod among them", ns, pods)
	}
	if got["secrets"] != "forbidden" || got["kube-system pods"] != "forbidden" {
		t.Errorf("the program is not confined to ctl's ServiceAccount: %s", r.Stdout)
	}
	// The cluster agrees on what that account may do.
	sa := "system:serviceaccount:" + ns + ":lister"
	for verb, want := range map[string]string{"list pods": "yes", "list secrets": "no"} {
		out, _ := kubectlErr("auth", "can-i", "--as", sa, "-n", ns, strings.Fields(verb)[0], strings.Fields(verb)[1])
		if strings.TrimSpace(out) != want {
			t.Errorf("kubectl auth can-i %s as %s = %q, want %q", verb, sa, out, want)
		}
	}

	off := tp(t, "run", "-n", ns, "--quiet", "--real-paths=false", "--from", "deployment/ctl", "--", "incluster")
	if off.Code == 0 || !strings.Contains(off.Stdout, "config:") {
		t.Fatalf("with --real-paths=false the program should not find its in-cluster config: %s", off)
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestRealPathsFiles checks what a program sees at the real paths: a Python app reading its
// config file, ls and cat of a secret directory, a subPath file, writes refused, the rest of the
// laptop's file system unchanged (/etc lists what it lists outside plus the two mount points),
// no capability and the user's own uid, a configMap update arriving at the real path, and an
// emptyDir left to the laptop. Afterwards nothing of it exists outside the session.
func TestRealPathsFiles(t *testing.T) {
	ns := namespace(t)
	controllerApp(t, ns)
	mustNotExist(t, "/etc/app", "/etc/creds", "/opt/ctl", "/cache")
	laptopEtc, err := os.ReadDir("/etc")
	if err != nil {
		t.Fatal(err)
	}
	var etc []string
	for _, e := range laptopEtc {
		if !strings.HasPrefix(e.Name(), ".") { // as ls lists them
			etc = append(etc, e.Name())
		}
	}
	etc = append(etc, "app", "creds")
	slices.Sort(etc)

	marker := filepath.Join(workDir, "realpaths-"+randomSuffix())
	defer os.Remove(marker)
	script := `
python3 -c 'print("CONFIG=" + open("/etc/app/config.yaml").read().replace("\n", ";"))'
echo "LS_CREDS=$(ls /etc/creds | tr '\n' ' ')"
echo "PASSWORD=$(cat /etc/creds/password)"
echo "LEVEL=$(cat /opt/ctl/level.conf)"
echo "ETC=$(ls /etc | sort | tr '\n' ' ')"
echo "HOSTNAME=$(cat /etc/hostname)"
echo "WRITE=$( (echo x > /etc/app/new) 2>&1 | sed 's/.*: //')"
echo "OVERWRITE=$( (echo x > /etc/creds/password) 2>&1 | sed 's/.*: //')"
echo "CAPS=$(grep CapEff /proc/self/status | tr -d '\t')"
echo "UID=$(id -u)"
echo "CACHE=$(ls -d /cache 2>&1 | sed 's/.*: //')"
echo "ROOTCOPY=$(cat "$TP_ROOT/etc/app/LOG_LEVEL")"
touch ` + marker + `
start=$(date +%s)
while [ "$(cat /etc/app/LOG_LEVEL)" != "trace" ]; do
  if [ $(( $(date +%s) - start )) -gt 60 ]; then echo "UPDATE=timeout"; exit 3; fi
  sleep 0.2
done
echo "UPDATE=after $(( $(date +%s) - start ))s"
`
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- run(tpCmd(ctx, "run", "-n", ns, "--from", "deployment/ctl", "--", "sh", "-c", script))
	}()
	waitFor(t, 90*time.Second, "the session to start", func() error { _, err := os.Stat(marker); return err })
	kubectl(t, "patch", "configmap", "ctl-config", "-n", ns, "--type=merge", "-p", `{"data":{"LOG_LEVEL":"trace"}}`)
	r := <-done
	if r.Code != 0 {
		t.Fatalf("session failed: %s", r)
	}
	got := lines(r.Stdout)
	uid := "0"
	if cred != nil {
		uid = fmt.Sprint(cred.Uid)
	}
	want := map[string]string{
		"CONFIG":    "mode: reconcile;workers: 4;",
		"LS_CREDS":  "password username ",
		"PASSWORD":  "hunter2",
		"LEVEL":     "debug",
		"ETC":       strings.Join(etc, " ") + " ",
		"HOSTNAME":  strings.TrimSpace(readFile(t, "/etc/hostname")),
		"WRITE":     "Read-only file system",
		"OVERWRITE": "Read-only file system",
		"CAPS":      "CapEff:0000000000000000",
		"UID":       uid,
		"CACHE":     "No such file or directory",
		"ROOTCOPY":  "debug",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if !strings.HasPrefix(got["UPDATE"], "after ") {
		t.Errorf("the configMap update did not reach /etc/app: %s", r)
	}
	t.Logf("configMap update visible at the real path: %s", got["UPDATE"])
	if !strings.Contains(r.Stderr, "volume(s) at their real paths") || !strings.Contains(r.Stderr, "/cache (emptyDir") {
		t.Errorf("the start-up lines do not say which volumes are at their real paths:\n%s", r.Stderr)
	}
	mustNotExist(t, "/etc/app", "/etc/creds", "/opt/ctl", "/cache")
	noPodsLeft(t, ns, 30*time.Second)
}

// lines parses KEY=VALUE or "key: value" lines.
func lines(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok || strings.Contains(k, ":") {
			k, v, _ = strings.Cut(l, ": ")
		}
		m[k] = v
	}
	return m
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRealPathsFallback runs the plugin where its user cannot create user namespaces (a user
// namespace of its own whose user.max_user_namespaces is 0, so the machine's setting is left
// alone): the session says in one line why the volumes are under $TP_ROOT only, and the command
// runs with them there.
func TestRealPathsFallback(t *testing.T) {
	ns := namespace(t)
	controllerApp(t, ns)
	mustNotExist(t, "/etc/app")
	args := []string{"run", "-n", ns, "--from", "deployment/ctl", "--", "sh", "-c",
		`if [ -e /etc/app ]; then echo "REAL=present"; else echo "REAL=absent"; fi; echo "COPY=$(tr '\n' ';' < "$TP_ROOT/etc/app/config.yaml")"`}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := tpCmd(ctx, args...)
	wrap := `echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --inh-caps=-all --ambient-caps=-all "$@"`
	cmd.Args = append([]string{"unshare", "--user", "--map-current-user", "--keep-caps", "sh", "-c", wrap, "sh", pluginBin}, args...)
	cmd.Path = "/usr/bin/unshare"
	r := run(cmd)
	if r.Code != 0 {
		t.Fatalf("session failed: %s", r)
	}
	got := lines(r.Stdout)
	if got["REAL"] != "absent" || got["COPY"] != "mode: reconcile;workers: 4;" {
		t.Errorf("want the copy under $TP_ROOT only: %s", r)
	}
	want := "volumes are under $TP_ROOT only, not at their real paths: user namespaces are off on this machine (user.max_user_namespaces=0)"
	if !strings.Contains(r.Stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
	}
	noPodsLeft(t, ns, 30*time.Second)
}
