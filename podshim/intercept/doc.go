// Package intercept is the data plane of personal intercepts: a router that sits behind a
// Service shared by several developers and sends each request either to the developer whose
// registered headers it carries (through that developer's session, reached by a Dialer the caller
// provides) or, unchanged, to the real pods.
//
// A Table holds the intercepts (Intercept: an ID, an owner, a start time, a Match of header
// equalities and a Dialer) and refuses clashes; a Router serves the Service's connections
// against it: HTTP/1.x per request (also on one kept-alive connection), h2c and gRPC per stream,
// upgrades (WebSocket) by their first request, everything else as raw bytes to the real pods, or
// everything to a header-less intercept.
//
// What it leaves out: Kubernetes (no k8s.io import), tunnels and sessions (the caller plugs in
// dialers and removes the intercepts of sessions that die), TLS (TLS traffic cannot be routed by
// header and goes to the real pods), HTTP/2 over TLS, and log rate limiting (the caller's; the
// router logs state changes only).
package intercept
