package intercept

import "testing"

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want proto
		done bool
	}{
		{"", protoRaw, false},
		{"G", protoRaw, false},
		{"GET /x?y HTTP/1.", protoRaw, false},
		{"GET /x?y HTTP/1.1\r", protoRaw, false},
		{"GET /x?y HTTP/1.1\r\n", protoHTTP1, true},
		{"GET / HTTP/1.0\n", protoHTTP1, true},
		{"M-SEARCH * HTTP/1.1\r\nHOST: x\r\n", protoHTTP1, true},
		{"POST /\xc3\xa9 HTTP/1.1\r\n", protoHTTP1, true},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", protoH2, true},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", protoH2, true},
		{"PRI * HTTP/2.0\r\n", protoRaw, false},
		{"PRI * HTTP/2.0\r\n\r\nXX", protoRaw, true},
		{"\x16\x03\x01", protoRaw, true},
		{"\x00", protoRaw, true},
		{"PING\r\n", protoRaw, true},
		{"GET  / HTTP/1.1\r\n", protoRaw, true},
		{"GET / HTTP/2.0\r\n", protoRaw, true},
		{"GET / HTTP/1.1 \r\n", protoRaw, true},
		{"GET / HTTP/1.1\rX", protoRaw, true},
		{"GET /\x7f HTTP/1.1\r\n", protoRaw, true},
		{"SSH-2.0-OpenSSH_9.6\r\n", protoRaw, true},
	} {
		p, done := classify([]byte(tc.in))
		if p != tc.want || done != tc.done {
			t.Errorf("classify(%q) = %v, %v; want %v, %v", tc.in, p, done, tc.want, tc.done)
		}
	}
}
