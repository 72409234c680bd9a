package proxy

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"
)

// SameUserListener is a loopback TCP listener that accepts only connections opened by processes
// of one user. For each connection it finds the peer's socket in the kernel's socket tables
// (/proc/net/tcp, then /proc/net/tcp6, where a dual-stack client such as a JVM appears with
// IPv4-mapped addresses) by its address pair, and compares the socket's owner with UID. Any other
// connection — another user's, root's, a peer not found, a table that cannot be read — is closed
// before a byte is read from it, and Accept waits for the next one.
//
// It lets a proxy that cannot ask its clients for credentials (the JDK's SOCKS5 client sends them
// only from a java.net.Authenticator) still refuse the machine's other users. What it leaves out:
// systems without /proc/net/tcp (SameUser returns an error there), distinguishing processes of the
// same user (all are trusted: they could read a session's credentials from the child's
// environment anyway), and the network namespace: only peers in the reader's namespace are found,
// which are the only ones that can reach a loopback listener.
type SameUserListener struct {
	// Listener is the wrapped listener, normally TCP on 127.0.0.1; Close and Addr are its own.
	net.Listener
	// UID is the user whose connections are accepted; SameUser sets it to os.Getuid().
	UID int
	// Logf logs each refused connection; nil means no logging.
	Logf logger.Logf

	// tables are the socket tables searched in order.
	tables []string
}

// The kernel's TCP socket tables: IPv4 sockets, and IPv6 (including dual-stack) ones.
const (
	procTCP  = "/proc/net/tcp"
	procTCP6 = "/proc/net/tcp6"
)

// SameUser wraps ln so that it accepts only connections from processes of the current user. It
// fails when the kernel's socket table cannot be read (systems other than Linux, /proc not
// mounted); ln is then left open for the caller to close.
func SameUser(ln net.Listener, logf logger.Logf) (*SameUserListener, error) {
	f, err := os.Open(procTCP)
	if err != nil {
		return nil, fmt.Errorf("proxy: cannot check the user of local connections: %w", err)
	}
	f.Close()
	return &SameUserListener{Listener: ln, UID: os.Getuid(), Logf: logf, tables: []string{procTCP, procTCP6}}, nil
}

// Accept returns the next connection whose peer socket belongs to UID. It closes the others, and
// returns only the wrapped listener's errors.
func (l *SameUserListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := l.peerUID(c)
		if err == nil && uid == l.UID {
			return c, nil
		}
		if err == nil {
			err = fmt.Errorf("its socket belongs to uid %d, not %d", uid, l.UID)
		}
		logf(l.Logf, "refused connection from %v: %v", c.RemoteAddr(), err)
		c.Close()
	}
}

// peerUID finds the owner of the socket at the other end of c: the row whose local address is c's
// remote address and whose remote address is c's local address.
func (l *SameUserListener) peerUID(c net.Conn) (int, error) {
	local, lok := c.LocalAddr().(*net.TCPAddr)
	remote, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return 0, fmt.Errorf("not a TCP connection (%T)", c)
	}
	for _, path := range l.tables {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) && path != l.tables[0] {
			continue // IPv6 disabled: no tcp6 table
		}
		if err != nil {
			return 0, err
		}
		uid, found, err := tableUID(f, binary.NativeEndian, remote.AddrPort(), local.AddrPort())
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		if found {
			return uid, nil
		}
	}
	return 0, errors.New("its socket is not in the kernel's socket tables")
}

// tcpTimeWait is the state column of a TIME_WAIT row, whose uid column is always 0.
const tcpTimeWait = 0x06

// tableUID reads a socket table in the format of /proc/net/tcp or /proc/net/tcp6 and returns the
// uid column of the row whose local_address is local and whose rem_address is remote (IPv4-mapped
// IPv6 addresses compare equal to their IPv4 form); found is false when no row matches. TIME_WAIT
// rows are skipped (their socket has no owner any more). order is the byte order in which the
// kernel printed each 32-bit word of an address: the host's.
func tableUID(r io.Reader, order binary.ByteOrder, local, remote netip.AddrPort) (uid int, found bool, err error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] == "sl" {
			continue
		}
		if len(f) < 8 {
			return 0, false, fmt.Errorf("line %d: %d fields, want at least 8", line, len(f))
		}
		la, err := parseProcAddr(f[1], order)
		if err != nil {
			return 0, false, fmt.Errorf("line %d: local address: %w", line, err)
		}
		if la != local {
			continue
		}
		ra, err := parseProcAddr(f[2], order)
		if err != nil {
			return 0, false, fmt.Errorf("line %d: remote address: %w", line, err)
		}
		if ra != remote {
			continue
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return 0, false, fmt.Errorf("line %d: state %q: %w", line, f[3], err)
		}
		if st == tcpTimeWait {
			continue
		}
		uid, err := strconv.Atoi(f[7])
		if err != nil {
			return 0, false, fmt.Errorf("line %d: uid %q: %w", line, f[7], err)
		}
		return uid, true, nil
	}
	if err := sc.Err(); err != nil {
		return 0, false, err
	}
	return 0, false, nil
}

// parseProcAddr parses ADDR:PORT as printed in /proc/net/tcp (8 hex digits) or /proc/net/tcp6 (32
// hex digits): the address as 32-bit words in order's byte order, the port in hex. IPv4-mapped
// addresses are returned in their IPv4 form.
func parseProcAddr(s string, order binary.ByteOrder) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q: no port", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: port: %w", s, err)
	}
	if len(h) != 8 && len(h) != 32 {
		return netip.AddrPort{}, fmt.Errorf("%q: address of %d hex digits, want 8 or 32", s, len(h))
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %w", s, err)
	}
	// hex gives each word's bytes as printed (big-endian); store each word in the kernel's order.
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		order.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}
