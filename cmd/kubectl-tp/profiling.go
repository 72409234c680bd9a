package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/spf13/pflag"
)

// profileNames are the values --profile takes, as in kubectl.
var profileNames = []string{"none", "cpu", "heap", "allocs", "goroutine", "threadcreate", "block", "mutex"}

// profiling holds kubectl's --profile and --profile-output flags: a Go pprof profile of this
// process, written when the command ends (for a session, when the child has exited and the session
// is torn down). It is meant for performance reports; it leaves out continuous profiling and
// profiles of podshim (run `go tool pprof` against a podshim built with the same sources instead).
type profiling struct {
	name, output string
	cpuFile      *os.File
}

func (p *profiling) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&p.name, "profile", "none", "Name of profile to capture. One of (none|cpu|heap|allocs|goroutine|threadcreate|block|mutex)")
	fs.StringVar(&p.output, "profile-output", "profile.pprof", "Name of the file to write the profile to")
}

// start begins a CPU profile, or turns on block or mutex sampling, as --profile asks.
func (p *profiling) start() error {
	switch p.name {
	case "none":
		return nil
	case "cpu":
		f, err := os.Create(p.output)
		if err != nil {
			return fmt.Errorf("--profile-output: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("--profile cpu: %w", err)
		}
		p.cpuFile = f
	case "block":
		runtime.SetBlockProfileRate(1)
	case "mutex":
		runtime.SetMutexProfileFraction(1)
	default:
		if pprof.Lookup(p.name) == nil {
			return fmt.Errorf("--profile %q is not one of none, cpu, heap, allocs, goroutine, threadcreate, block, mutex", p.name)
		}
	}
	return nil
}

// stop writes the profile chosen by --profile to --profile-output.
func (p *profiling) stop() error {
	switch p.name {
	case "none":
		return nil
	case "cpu":
		pprof.StopCPUProfile()
		return p.cpuFile.Close()
	case "heap":
		runtime.GC() // up-to-date statistics, as kubectl does
	}
	f, err := os.Create(p.output)
	if err != nil {
		return fmt.Errorf("--profile-output: %w", err)
	}
	if err := pprof.Lookup(p.name).WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("writing the %s profile: %w", p.name, err)
	}
	return f.Close()
}
