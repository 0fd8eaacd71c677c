package herald

import "syscall"

func dupCloexec(fd int) (int, error) {
	// F_DUPFD_CLOEXEC: a duplicate that is not inherited by child processes.
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}
