package capture

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Values of the seccomp ABI (linux/seccomp.h, linux/audit.h), spelled out so that the filter
// builds and is tested on any operating system.
const (
	retKillProcess = 0x80000000
	retErrno       = 0x00050000
	retUserNotif   = 0x7fc00000
	retAllow       = 0x7fff0000

	archX86_64  = 0xc000003e
	archI386    = 0x40000003
	archAArch64 = 0xc00000b7
	archARM     = 0x40000028

	x32SyscallBit = 0x40000000

	errnoEACCES = 13
	errnoENOSYS = 38

	// offsets in struct seccomp_data
	offNr   = 0
	offArch = 4
)

// abi is the system call numbers the filter looks at for one audit architecture.
type abi struct {
	arch         uint32
	connect      uint32
	socketcall   uint32 // 0: none
	ioUringSetup uint32
	x32          bool // reject the x32 ABI (syscall numbers with bit 30 set)
}

// abis are the native and compat ABIs of each GOARCH transparent mode supports.
var abis = map[string][2]abi{
	"amd64": {
		{arch: archX86_64, connect: 42, ioUringSetup: 425, x32: true},
		{arch: archI386, connect: 362, socketcall: 102, ioUringSetup: 425},
	},
	"arm64": {
		{arch: archAArch64, connect: 203, ioUringSetup: 425},
		{arch: archARM, connect: 283, ioUringSetup: 425},
	},
}

// Filter returns the seccomp program for goarch ("amd64" or "arm64"). On the native ABI it reports
// connect(2) to the listener (SECCOMP_RET_USER_NOTIF), fails io_uring_setup(2) with ENOSYS (io_uring
// would connect where seccomp cannot see it; liburing, libuv and Tokio fall back to plain calls)
// and, on amd64, fails every x32 call with ENOSYS. On the compat ABI (32-bit programs) connect and
// socketcall fail with EACCES: they cannot be carried, and must not leave unseen. Every other
// architecture value kills the process: the filter denies what it does not understand.
func Filter(goarch string) ([]bpf.RawInstruction, error) {
	pair, ok := abis[goarch]
	if !ok {
		return nil, fmt.Errorf("capture: no seccomp filter for %s (amd64 and arm64 only)", goarch)
	}
	native, compat := pair[0], pair[1]

	// A tiny assembler: jumps name their targets, resolved once every label is placed.
	type op struct {
		ins           bpf.Instruction
		jTrue, jFalse string // labels; "" means the next instruction
		label         string
	}
	var prog []op
	emit := func(ins bpf.Instruction) { prog = append(prog, op{ins: ins}) }
	jeq := func(val uint32, t, f string) {
		prog = append(prog, op{ins: bpf.JumpIf{Cond: bpf.JumpEqual, Val: val}, jTrue: t, jFalse: f})
	}
	label := func(name string, ins bpf.Instruction) { prog = append(prog, op{ins: ins, label: name}) }

	emit(bpf.LoadAbsolute{Off: offArch, Size: 4})
	jeq(native.arch, "", "compat")
	emit(bpf.LoadAbsolute{Off: offNr, Size: 4})
	if native.x32 {
		prog = append(prog, op{ins: bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit}, jTrue: "enosys"})
	}
	jeq(native.connect, "notify", "")
	jeq(native.ioUringSetup, "enosys", "")
	emit(bpf.RetConstant{Val: retAllow})

	label("compat", bpf.JumpIf{Cond: bpf.JumpEqual, Val: compat.arch})
	prog[len(prog)-1].jFalse = "kill"
	emit(bpf.LoadAbsolute{Off: offNr, Size: 4})
	jeq(compat.connect, "eacces", "")
	if compat.socketcall != 0 {
		jeq(compat.socketcall, "eacces", "")
	}
	jeq(compat.ioUringSetup, "enosys", "")
	emit(bpf.RetConstant{Val: retAllow})

	label("kill", bpf.RetConstant{Val: retKillProcess})
	label("notify", bpf.RetConstant{Val: retUserNotif})
	label("enosys", bpf.RetConstant{Val: retErrno | errnoENOSYS})
	label("eacces", bpf.RetConstant{Val: retErrno | errnoEACCES})

	at := map[string]int{}
	for i, o := range prog {
		if o.label != "" {
			at[o.label] = i
		}
	}
	skip := func(from int, target string) (uint8, error) {
		if target == "" {
			return 0, nil
		}
		to, ok := at[target]
		if !ok || to <= from || to-from-1 > 255 {
			return 0, fmt.Errorf("capture: filter: bad jump to %q", target)
		}
		return uint8(to - from - 1), nil
	}
	insns := make([]bpf.Instruction, len(prog))
	for i, o := range prog {
		insns[i] = o.ins
		if j, ok := o.ins.(bpf.JumpIf); ok {
			var err error
			if j.SkipTrue, err = skip(i, o.jTrue); err != nil {
				return nil, err
			}
			if j.SkipFalse, err = skip(i, o.jFalse); err != nil {
				return nil, err
			}
			insns[i] = j
		}
	}
	return bpf.Assemble(insns)
}
