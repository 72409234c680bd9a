package main

// README claims about the commands' own behaviour (issue #13): --image over $KUBECTL_TP_IMAGE
// over the image `kubectl tp version` prints; `cleanup -A` leaves live sessions alone; `status`
// prints a table, JSON and YAML. The cluster is a fake clientset.

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-tp/kubectl-tp/session"
)

// TestImagePrecedence checks README's `--image REF`: "podshim image (default
// `$KUBECTL_TP_IMAGE`, else the image printed by `kubectl tp version`)", by running the real
// command line and reading the image `run` settles on.
func TestImagePrecedence(t *testing.T) {
	streams := func() (genericiooptions.IOStreams, *bytes.Buffer) {
		var out bytes.Buffer
		return genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &bytes.Buffer{}}, &out
	}
	// What `kubectl tp version` prints, with $KUBECTL_TP_IMAGE unset.
	t.Setenv("KUBECTL_TP_IMAGE", "")
	os.Unsetenv("KUBECTL_TP_IMAGE")
	s, out := streams()
	root := newRootCommand(s, fakeClients(fake.NewClientset()))
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatalf("version: %v", err)
	}
	m := regexp.MustCompile(`(?m)^image: (\S+)$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("`kubectl tp version` printed no image line:\n%s", out)
	}
	versionImage := m[1]

	cases := []struct {
		name string
		env  *string // nil: unset
		args []string
		want string
	}{
		{"neither: the image of `kubectl tp version`", nil, nil, versionImage},
		{"$KUBECTL_TP_IMAGE over the default", ptr.To("registry.example/env:1"), nil, "registry.example/env:1"},
		{"--image over $KUBECTL_TP_IMAGE", ptr.To("registry.example/env:1"), []string{"--image", "registry.example/flag:2"}, "registry.example/flag:2"},
		{"--image alone", nil, []string{"--image=registry.example/flag:2"}, "registry.example/flag:2"},
		{"empty $KUBECTL_TP_IMAGE is unset", ptr.To(""), nil, versionImage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECTL_TP_IMAGE", "")
			if tc.env == nil {
				os.Unsetenv("KUBECTL_TP_IMAGE")
			} else {
				t.Setenv("KUBECTL_TP_IMAGE", *tc.env)
			}
			s, _ := streams()
			root := newRootCommand(s, fakeClients(fake.NewClientset()))
			// No command after --: run completes its options, then refuses before any cluster call.
			root.SetArgs(append([]string{"run"}, tc.args...))
			if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "no command given") {
				t.Fatalf("run without a command: %v, want \"no command given\"", err)
			}
			run, _, err := root.Find([]string{"run"})
			if err != nil {
				t.Fatal(err)
			}
			if got := run.Flags().Lookup("image").Value.String(); got != tc.want {
				t.Errorf("image = %q, want %q", got, tc.want)
			}
		})
	}
}

// swapped returns a Deployment swapped to 0 by session sess (proxy pod tp-sess), recorded
// replicas 3.
func swapped(ns, name, sess string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{
			session.AnnotationSwapSession: sess, session.AnnotationSwapPod: "tp-" + sess, session.AnnotationSwapReplicas: "3",
			session.AnnotationSwapOwner: "alice@laptop", session.AnnotationSwapStarted: "2026-01-02T03:04:05Z",
		}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](0)},
	}
}

// proxyPod returns a proxy pod of session sess in ns.
func proxyPod(ns, sess string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tp-" + sess, CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Minute)),
			Labels:      map[string]string{session.LabelManagedBy: session.ManagedBy, session.LabelSession: sess},
			Annotations: map[string]string{session.AnnotationOwner: "alice@laptop"}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

// TestCleanupAllNamespacesSparesLiveSessions checks README's `kubectl tp cleanup -A`: in every
// namespace it restores Deployments of dead sessions and deletes ended proxy pods, and leaves
// live sessions — their swapped Deployments and their running pods — alone.
func TestCleanupAllNamespacesSparesLiveSessions(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir()) // cleanup also sweeps stale volume copies there
	cs := fake.NewClientset(
		swapped("team-a", "api", "live"), proxyPod("team-a", "live", corev1.PodRunning),
		swapped("team-b", "web", "ended"), proxyPod("team-b", "ended", corev1.PodSucceeded),
		swapped("team-c", "db", "gone"),
		proxyPod("team-d", "starting", corev1.PodPending),
		proxyPod("team-d", "failed", corev1.PodFailed),
	)
	var out bytes.Buffer
	o := &CleanupOptions{IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &out}, AllNamespaces: true, namespace: "default", client: cs}
	if err := o.Run(context.Background()); err != nil {
		t.Fatalf("cleanup -A: %v\n%s", err, out.String())
	}
	ctx := context.Background()
	deps := []struct {
		ns, name string
		replicas int32
		session  string
	}{
		{"team-a", "api", 0, "live"},
		{"team-b", "web", 3, ""},
		{"team-c", "db", 3, ""},
	}
	for _, d := range deps {
		got, err := cs.AppsV1().Deployments(d.ns).Get(ctx, d.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *got.Spec.Replicas != d.replicas || got.Annotations[session.AnnotationSwapSession] != d.session {
			t.Errorf("deployment %s/%s: replicas %d, session %q; want %d, %q", d.ns, d.name, *got.Spec.Replicas, got.Annotations[session.AnnotationSwapSession], d.replicas, d.session)
		}
	}
	pods := []struct {
		ns, name string
		kept     bool
	}{
		{"team-a", "tp-live", true},
		{"team-b", "tp-ended", false},
		{"team-d", "tp-starting", true},
		{"team-d", "tp-failed", false},
	}
	for _, p := range pods {
		_, err := cs.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if kept := err == nil; kept != p.kept || (err != nil && !apierrors.IsNotFound(err)) {
			t.Errorf("pod %s/%s: kept = %v (%v), want %v", p.ns, p.name, kept, err, p.kept)
		}
	}
	for _, line := range []string{
		"deployment/api in team-a: swapped by live session live (pod tp-live); left alone",
		"deployment/web in team-b: restored to 3 replicas",
		"deployment/db in team-c: restored to 3 replicas",
		"pod/tp-ended in team-b: deleted",
		"pod/tp-failed in team-d: deleted",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
}

// TestStatusOutput checks README's `kubectl tp status` (a table of the sessions, alive or dead,
// what they swapped, their watchdog) and `-o json` / `-o yaml` (the same sessions, machine
// readable, reading back to the same values), from a fake cluster with one live swap session in
// one namespace and one dead session in another.
func TestStatusOutput(t *testing.T) {
	wd := proxyPod("team-a", "live", corev1.PodRunning)
	wd.Name = "tp-live-watchdog"
	wd.Labels[session.LabelManagedBy] = session.WatchdogManagedBy
	live := proxyPod("team-a", "live", corev1.PodRunning)
	live.Annotations[session.AnnotationFrom] = "deployments/api:app"
	live.Annotations[session.AnnotationIntercept] = "web:8080,x-dev=alice"
	cs := fake.NewClientset(
		swapped("team-a", "api", "live"), live, wd,
		proxyPod("team-b", "ended", corev1.PodSucceeded),
	)
	run := func(t *testing.T, all bool, format string) string {
		t.Helper()
		var out bytes.Buffer
		o := &StatusOptions{IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &out}, AllNamespaces: all, Output: format, namespace: "team-a", client: cs}
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := o.Run(context.Background()); err != nil {
			t.Fatalf("status: %v", err)
		}
		return out.String()
	}
	want := []session.Status{
		{Session: "live", Namespace: "team-a", Pod: "tp-live", Phase: "Running", Alive: true, Owner: "alice@laptop", From: "deployments/api:app", Swapped: "api", Intercept: "web:8080,x-dev=alice", Watchdog: "Running"},
		{Session: "ended", Namespace: "team-b", Pod: "tp-ended", Phase: "Succeeded", Alive: false, Owner: "alice@laptop"},
	}
	t.Run("table", func(t *testing.T) {
		lines := strings.Split(strings.TrimSpace(run(t, true, "")), "\n")
		if len(lines) != 3 {
			t.Fatalf("want a header and 2 rows, got:\n%s", strings.Join(lines, "\n"))
		}
		cols := []string{"NAMESPACE", "SESSION", "POD", "STATE", "OWNER", "FROM", "SWAPPED", "INTERCEPT", "WATCHDOG", "AGE"}
		if got := strings.Fields(lines[0]); strings.Join(got, " ") != strings.Join(cols, " ") {
			t.Errorf("header %q, want %q", got, cols)
		}
		rows := map[string][]string{}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			rows[f[1]] = f
		}
		wantRows := map[string][]string{
			"live":  {"team-a", "live", "tp-live", "alive", "alice@laptop", "deployments/api:app", "api", "web:8080,x-dev=alice", "Running"},
			"ended": {"team-b", "ended", "tp-ended", "dead", "(Succeeded)", "alice@laptop", "-", "-", "-", "-"},
		}
		for sess, w := range wantRows {
			got := rows[sess]
			if len(got) != len(w)+1 || strings.Join(got[:len(w)], " ") != strings.Join(w, " ") {
				t.Errorf("row of %s: %q, want %q then the age", sess, got, w)
				continue
			}
			if age, err := time.ParseDuration(got[len(w)]); err != nil || age < time.Minute || age > 2*time.Minute {
				t.Errorf("row of %s: AGE %q, want about 1m", sess, got[len(w)])
			}
		}
	})
	t.Run("table, one namespace", func(t *testing.T) {
		out := run(t, false, "")
		if !strings.Contains(out, "tp-live") || strings.Contains(out, "tp-ended") {
			t.Errorf("status without -A must list team-a only:\n%s", out)
		}
	})
	for _, format := range []string{"json", "yaml"} {
		t.Run("-o "+format, func(t *testing.T) {
			out := run(t, true, format)
			for _, key := range []string{"session", "namespace", "pod", "phase", "alive", "owner", "from", "swappedDeployment", "watchdog", "started"} {
				if !regexp.MustCompile(`(?m)^\W*"?` + key + `"?:`).MatchString(out) {
					t.Errorf("no %q key in:\n%s", key, out)
				}
			}
			var got []session.Status
			if err := yaml.Unmarshal([]byte(out), &got); err != nil { // YAML is a superset of JSON
				t.Fatalf("-o %s does not parse: %v\n%s", format, err, out)
			}
			if len(got) != len(want) {
				t.Fatalf("-o %s: %d sessions, want %d\n%s", format, len(got), len(want), out)
			}
			for i := range want {
				g := got[i]
				g.Started = time.Time{}
				if g != want[i] {
					t.Errorf("-o %s session %d: %+v, want %+v", format, i, g, want[i])
				}
				if got[i].Started.IsZero() {
					t.Errorf("-o %s session %d: no start time", format, i)
				}
			}
		})
	}
	t.Run("no sessions", func(t *testing.T) {
		var out bytes.Buffer
		o := &StatusOptions{IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &out}, namespace: "empty", client: fake.NewClientset()}
		if err := o.Run(context.Background()); err != nil || strings.TrimSpace(out.String()) != "No kubectl-tp sessions." {
			t.Errorf("status in an empty namespace: %v, %q", err, out.String())
		}
	})
}
