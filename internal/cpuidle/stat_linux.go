package cpuidle

import "syscall"

// statFile is /proc/stat, open for the life of a Watcher: each read
// starts again at its beginning (pread at 0) and allocates nothing.
type statFile struct{ fd int }

func openStat() (*statFile, error) {
	fd, err := syscall.Open("/proc/stat", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &statFile{fd}, nil
}

func (f *statFile) read() (Sample, error) {
	var buf [512]byte // the cpu line: 10 numbers of at most 20 digits
	n, err := syscall.Pread(f.fd, buf[:], 0)
	if err != nil {
		return Sample{}, err
	}
	return ParseStat(buf[:n])
}

func (f *statFile) close() { syscall.Close(f.fd) }
