package proxy

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

// procTCPSample is /proc/net/tcp as printed on a little-endian machine: a listener on
// 127.0.0.1:8080 (0x1F90) and connections to it from ports 50000-50002 (0xC350-0xC352).
const procTCPSample = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 22222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1234        0 33333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 44444 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:C352 0100007F:1F90 06 00000000:00000000 03:00001771 00000000     0        0 0 3 0000000000000000
`

// procTCP6Sample is /proc/net/tcp6 on a little-endian machine: a dual-stack client (as a JVM
// opens) connected to 127.0.0.1:8080 from port 50003, and a client of [::1]:8080 from port 50004.
const procTCP6Sample = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:C353 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 55555 1 0000000000000000 20 4 30 10 -1
   1: 00000000000000000000000001000000:C354 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000  1002        0 66666 1 0000000000000000 20 4 30 10 -1
`

func TestTableUID(t *testing.T) {
	ap := netip.MustParseAddrPort
	listener := ap("127.0.0.1:8080")
	cases := []struct {
		name          string
		table         string
		local, remote netip.AddrPort // the peer socket's own addresses
		wantUID       int
		wantFound     bool
		wantErr       string
	}{
		{name: "match", table: procTCPSample, local: ap("127.0.0.1:50000"), remote: listener, wantUID: 1000, wantFound: true},
		{name: "other uid", table: procTCPSample, local: ap("127.0.0.1:50001"), remote: listener, wantUID: 0, wantFound: true},
		{name: "pair is directional", table: procTCPSample, local: listener, remote: ap("127.0.0.1:50000"), wantUID: 1234, wantFound: true},
		{name: "time-wait row has no owner", table: procTCPSample, local: ap("127.0.0.1:50002"), remote: listener},
		{name: "no entry", table: procTCPSample, local: ap("127.0.0.1:50009"), remote: listener},
		{name: "listener row is not a peer", table: procTCPSample, local: listener, remote: ap("0.0.0.0:0"), wantUID: 1000, wantFound: true},
		{name: "v6 line, v4-mapped peer", table: procTCP6Sample, local: ap("127.0.0.1:50003"), remote: listener, wantUID: 1001, wantFound: true},
		{name: "v6 line, v4-mapped query", table: procTCP6Sample, local: ap("[::ffff:127.0.0.1]:50003"), remote: ap("[::ffff:127.0.0.1]:8080"), wantUID: 1001, wantFound: true},
		{name: "v6 line, ::1", table: procTCP6Sample, local: ap("[::1]:50004"), remote: ap("[::1]:8080"), wantUID: 1002, wantFound: true},
		{name: "v6 table, v4 peer absent", table: procTCP6Sample, local: ap("127.0.0.1:50000"), remote: listener},
		{name: "empty table", table: "", local: ap("127.0.0.1:50000"), remote: listener},
		{name: "short line", table: "   0: 0100007F:C350 0100007F:1F90 01\n", local: ap("127.0.0.1:50000"), remote: listener, wantErr: "fields"},
		{name: "bad address", table: "   0: 0100007G:C350 0100007F:1F90 01 0:0 0:0 0 1000 0 1\n", local: ap("127.0.0.1:50000"), remote: listener, wantErr: "local address"},
		{name: "bad uid", table: "   0: 0100007F:C350 0100007F:1F90 01 0:0 0:0 0 x 0 1\n", local: ap("127.0.0.1:50000"), remote: listener, wantErr: "uid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			uid, found, err := tableUID(strings.NewReader(tc.table), binary.LittleEndian, tc.local, tc.remote)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || uid != tc.wantUID || found != tc.wantFound {
				t.Fatalf("tableUID = %d, %v, %v; want %d, %v, nil", uid, found, err, tc.wantUID, tc.wantFound)
			}
		})
	}
}

func TestParseProcAddr(t *testing.T) {
	cases := []struct {
		in    string
		order binary.ByteOrder
		want  string // "" for an error
	}{
		{"0100007F:1F90", binary.LittleEndian, "127.0.0.1:8080"},
		{"7F000001:1F90", binary.BigEndian, "127.0.0.1:8080"},
		{"0000000000000000FFFF00000100007F:C350", binary.LittleEndian, "127.0.0.1:50000"},
		{"00000000000000000000FFFF7F000001:C350", binary.BigEndian, "127.0.0.1:50000"},
		{"B80D0120000000000000000001000000:0050", binary.LittleEndian, "[2001:db8::1]:80"},
		{"00000000:0000", binary.LittleEndian, "0.0.0.0:0"},
		{"0100007F", binary.LittleEndian, ""},
		{"0100007F:FFFFF", binary.LittleEndian, ""},
		{"0100:1F90", binary.LittleEndian, ""},
	}
	for _, tc := range cases {
		got, err := parseProcAddr(tc.in, tc.order)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parseProcAddr(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("parseProcAddr(%q, %v) = %v, %v; want %s", tc.in, tc.order, got, err, tc.want)
		}
	}
}
