package intercept_test

import (
	"fmt"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim/intercept"
)

func ExampleTable_Add() {
	tab := &intercept.Table{}
	start := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	alice, _ := intercept.ParseMatch("x-dev=alice")
	fmt.Println(tab.Add(intercept.Intercept{ID: "s1", Owner: "alice@laptop", Started: start, Match: alice, Dialer: intercept.TCPDialer("127.0.0.1:9")}))
	again, _ := intercept.ParseMatch("X-DEV=alice")
	fmt.Println(tab.Add(intercept.Intercept{ID: "s2", Owner: "bob@desk", Started: start, Match: again, Dialer: intercept.TCPDialer("127.0.0.1:9")}))
	fmt.Println(tab.Add(intercept.Intercept{ID: "s3", Owner: "carol@desk", Started: start, Dialer: intercept.TCPDialer("127.0.0.1:9")}))
	_, err := intercept.ParseHeader("x-dev alice")
	fmt.Println(err)
	// Output:
	// <nil>
	// headers X-Dev=alice are already intercepted by alice@laptop (started 2025-03-04T05:06:07Z): choose other headers, or wait until that session ends
	// an intercept without headers takes every request of the service, but alice@laptop already intercepts X-Dev=alice (started 2025-03-04T05:06:07Z): intercept with headers (e.g. x-dev=yourname) or wait until that session ends
	// header "x-dev alice" has no '=': write it as NAME=VALUE, e.g. x-dev=alice
}
