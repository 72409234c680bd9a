package capture

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"
)

// seccompData builds struct seccomp_data with nr and arch. The kernel loads its words in native
// byte order; x/net/bpf's VM loads packet words in network order, so the fields are written
// big-endian here for the VM to see the values the kernel sees.
func seccompData(nr, arch uint32) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	return b
}

func TestFilter(t *testing.T) {
	cases := []struct {
		goarch   string
		name     string
		nr, arch uint32
		want     uint32
	}{
		{"amd64", "connect is reported", 42, archX86_64, retUserNotif},
		{"amd64", "io_uring_setup fails", 425, archX86_64, retErrno | errnoENOSYS},
		{"amd64", "read runs", 0, archX86_64, retAllow},
		{"amd64", "sendto runs", 44, archX86_64, retAllow},
		{"amd64", "x32 connect fails", x32SyscallBit | 42, archX86_64, retErrno | errnoENOSYS},
		{"amd64", "i386 connect refused", 362, archI386, retErrno | errnoEACCES},
		{"amd64", "i386 socketcall refused", 102, archI386, retErrno | errnoEACCES},
		{"amd64", "i386 io_uring_setup fails", 425, archI386, retErrno | errnoENOSYS},
		{"amd64", "i386 write runs", 4, archI386, retAllow},
		{"amd64", "unknown architecture killed", 42, archAArch64, retKillProcess},
		{"arm64", "connect is reported", 203, archAArch64, retUserNotif},
		{"arm64", "io_uring_setup fails", 425, archAArch64, retErrno | errnoENOSYS},
		{"arm64", "x86_64's connect number runs", 42, archAArch64, retAllow},
		{"arm64", "arm connect refused", 283, archARM, retErrno | errnoEACCES},
		{"arm64", "unknown architecture killed", 42, archX86_64, retKillProcess},
	}
	for _, tc := range cases {
		t.Run(tc.goarch+"/"+tc.name, func(t *testing.T) {
			raw, err := Filter(tc.goarch)
			if err != nil {
				t.Fatal(err)
			}
			insns, ok := bpf.Disassemble(raw)
			if !ok {
				t.Fatal("the filter does not disassemble")
			}
			vm, err := bpf.NewVM(insns)
			if err != nil {
				t.Fatal(err)
			}
			got, err := vm.Run(seccompData(tc.nr, tc.arch))
			if err != nil {
				t.Fatal(err)
			}
			if uint32(got) != tc.want {
				t.Errorf("syscall %d arch %#x: got %#x, want %#x", tc.nr, tc.arch, got, tc.want)
			}
		})
	}
	if _, err := Filter("riscv64"); err == nil {
		t.Error("Filter(riscv64) gave a program for an ABI it does not know")
	}
}
