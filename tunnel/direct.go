package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"time"
)

// The direct path: when the laptop can reach the proxy pod's IP, carriers ([Mux]) travel over a
// TLS connection straight to podshim instead of through the API server's port-forward. Both ends
// use throw-away self-signed certificates and pin each other's: the client sends its certificate
// and receives podshim's over an ordinary (token-checked) request on the port-forward
// ([Client.Direct]), so only this session's laptop can use the direct listener, and nobody in the
// cluster network can read or alter what travels on it. The token is still checked on every
// request that arrives on it.
//
// What it leaves out: choosing the path (the session probes and falls back) and certificate
// rotation (a certificate lives as long as its process).

// DirectInfo is what podshim answers to [Client.Direct].
type DirectInfo struct {
	// Port is where podshim's direct listener is, on every address of the pod.
	Port int
	// Cert is podshim's certificate (DER), to pin.
	Cert []byte
}

// Direct registers cert (DER, the client's own) with podshim and returns podshim's direct
// listener. A podshim without one answers CodeBadRequest.
func (c *Client) Direct(ctx context.Context, cert []byte) (DirectInfo, error) {
	conn, resp, err := c.roundTrip(ctx, &Request{Op: OpDirect, Cert: cert})
	if err != nil {
		return DirectInfo{}, err
	}
	conn.Close()
	if resp.Port <= 0 || len(resp.Cert) == 0 {
		return DirectInfo{}, errors.New("tunnel: direct: the server gave no port or certificate")
	}
	return DirectInfo{Port: resp.Port, Cert: resp.Cert}, nil
}

// SelfSigned returns a fresh ECDSA P-256 certificate for one process's use on the direct path.
func SelfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "kubectl-tp direct path"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Pinned returns a VerifyPeerCertificate function that accepts exactly the certificates whose
// SHA-256 allowed reports true (normal chain verification is off: the certificates are
// self-signed and pinned instead).
func Pinned(allowed func(sum [32]byte) bool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("tunnel: direct: no certificate")
		}
		if !allowed(sha256.Sum256(raw[0])) {
			return errors.New("tunnel: direct: certificate not pinned")
		}
		return nil
	}
}

// DialDirect opens a TLS connection to the direct listener at host:info.Port, presenting cert and
// accepting only info.Cert.
func DialDirect(ctx context.Context, host string, info DirectInfo, cert tls.Certificate) (net.Conn, error) {
	want := sha256.Sum256(info.Cert)
	cfg := &tls.Config{
		Certificates:          []tls.Certificate{cert},
		InsecureSkipVerify:    true, // replaced by the pin below
		VerifyPeerCertificate: Pinned(func(sum [32]byte) bool { return subtle.ConstantTimeCompare(sum[:], want[:]) == 1 }),
		MinVersion:            tls.VersionTLS13,
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(info.Port)))
	if err != nil {
		return nil, fmt.Errorf("tunnel: direct path to %s: %w", host, err)
	}
	return c, nil
}
