// Command ociimage builds a FROM-scratch container image from host files and writes it
// as an OCI image-layout tarball for `ctr -n k8s.io images import`; see package
// internal/ociimage for what the image holds.
//
// It only parses flags and prints the result: it leaves out everything the library
// leaves out (base images, several layers, pushing to a registry) and does not import
// the tarball itself.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kubectl-tp/kubectl-tp/internal/ociimage"
)

// usage is printed by -h and after a usage error.
const usage = `usage: ociimage -ref REF -out FILE [-user U] [-entrypoint ARG]... [-cmd ARG]...
                [-platform linux/amd64,linux/arm64] [-env K=V]... SRC:DST[:MODE]...

Writes an OCI image-layout tarball holding each SRC at DST (MODE octal, default 0755),
named REF for 'ctr -n k8s.io images import FILE'. With several platforms, {arch} in a
SRC is replaced by each platform's architecture.

`

// listFlag is a repeatable string flag.
type listFlag []string

// String returns the values joined by commas.
func (l *listFlag) String() string { return strings.Join(*l, ",") }

// Set appends one value.
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ociimage:", strings.TrimPrefix(err.Error(), "ociimage: "))
		}
		os.Exit(2)
	}
}

// run parses args, builds the image and prints one line naming the result.
func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var opts ociimage.Options
	var entrypoint, cmd, env listFlag
	platforms := fs.String("platform", ociimage.DefaultPlatform, "comma-separated `os/arch[/variant]` list")
	fs.StringVar(&opts.Ref, "ref", "", "image `reference`, e.g. ghcr.io/kubectl-tp/podshim:v0.1.0 (required)")
	fs.StringVar(&opts.Out, "out", "", "`path` of the tarball to write (required)")
	fs.StringVar(&opts.User, "user", "", "`user` the image runs as, e.g. 65532:65532 (default root)")
	fs.Var(&entrypoint, "entrypoint", "one entrypoint `argument`; repeat for more")
	fs.Var(&cmd, "cmd", "one default command `argument`; repeat for more")
	fs.Var(&env, "env", "one `K=V` environment entry; repeat for more")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if opts.Ref == "" || opts.Out == "" {
		fs.Usage()
		return errors.New("-ref and -out are required")
	}
	for _, a := range fs.Args() {
		f, err := ociimage.ParseFileSpec(a)
		if err != nil {
			return err
		}
		opts.Files = append(opts.Files, f)
	}
	opts.Entrypoint, opts.Cmd, opts.Env = entrypoint, cmd, env
	for _, p := range strings.Split(*platforms, ",") {
		if p = strings.TrimSpace(p); p != "" {
			opts.Platforms = append(opts.Platforms, p)
		}
	}
	if err := ociimage.Build(opts); err != nil {
		return err
	}
	d, err := ociimage.Describe(opts.Out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %s (%s, %s)\n", opts.Out, d.Ref, d.Digest)
	return err
}
