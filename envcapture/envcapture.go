package envcapture

import "strings"

// MachineVars are the variables that describe the machine or container a process runs
// in rather than the app's configuration. [Filter] drops them from a captured
// environment and [Merge] always takes them from the local one. Variables whose name
// starts with [SessionPrefix] are treated the same way.
var MachineVars = []string{"PATH", "HOME", "HOSTNAME", "TERM", "PWD", "SHLVL", "USER"}

// SessionPrefix starts the names of the variables that kubectl-tp and podshim set for
// themselves (TP_TOKEN, TP_DNS, ...); they are never taken from a captured environment.
const SessionPrefix = "TP_"

// IsMachineVar reports whether name is one of [MachineVars] or starts with
// [SessionPrefix].
func IsMachineVar(name string) bool {
	if strings.HasPrefix(name, SessionPrefix) {
		return true
	}
	for _, m := range MachineVars {
		if name == m {
			return true
		}
	}
	return false
}

// split returns the name and value of a "KEY=value" entry; ok is false for entries
// without '=' or with an empty name, which are not variables.
func split(kv string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(kv, "=")
	return name, value, ok && name != ""
}

// Filter returns the entries of environ ("KEY=value") that belong to the app: it drops
// the machine variables (see [IsMachineVar]) and malformed entries (no '=' or an empty
// name) and keeps everything else in order, including KUBERNETES_SERVICE_HOST and other
// service-link variables, which are app configuration.
func Filter(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if name, _, ok := split(kv); ok && !IsMachineVar(name) {
			out = append(out, kv)
		}
	}
	return out
}

// Merge returns the environment for the local child: local with the captured values
// laid over it. A variable set in captured replaces the local value of the same name,
// except for machine variables (see [IsMachineVar]), which always come from local (a
// captured machine variable is ignored, even when local lacks it).
//
// Each name appears once, with the last value given for it. The order is deterministic:
// local names in the order they first appear, then the names only captured has, in the
// order they first appear there. Malformed entries (no '=' or an empty name) are
// dropped.
func Merge(local, captured []string) []string {
	var order []string
	values := make(map[string]string, len(local)+len(captured))
	add := func(name, value string) {
		if _, seen := values[name]; !seen {
			order = append(order, name)
		}
		values[name] = value
	}
	for _, kv := range local {
		if name, value, ok := split(kv); ok {
			add(name, value)
		}
	}
	for _, kv := range captured {
		if name, value, ok := split(kv); ok && !IsMachineVar(name) {
			add(name, value)
		}
	}
	out := make([]string, len(order))
	for i, name := range order {
		out[i] = name + "=" + values[name]
	}
	return out
}
