package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// seqFile is the esp.SeqStore of a statically keyed outbound SA: a file in
// the state directory, named after a hash of the key (the IV must be unique
// per key, whatever SPI or configuration the key appears in), holding the
// highest sequence number reserved. It is replaced atomically and synced
// before the numbers it reserves are used. One process at a time uses a
// key: the file's lock is held for the process's lifetime.
type seqFile struct {
	path string
	lock *instanceLock // never released: a reference, so it is not collected
}

// newSeqFile returns the sequence file of key in dir, creating dir (mode
// 0700) if needed, and locks it: two processes sealing under one key
// would use the same numbers.
func newSeqFile(dir string, key []byte) (seqFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return seqFile{}, fmt.Errorf("state directory: %w", err)
	}
	h := sha256.Sum256(append([]byte("oevpn static SA sequence numbers\x00"), key...))
	f := seqFile{path: filepath.Join(dir, "esp-seq-"+hex.EncodeToString(h[:16]))}
	var err error
	f.lock, err = lockFile(f.path + ".lock") // held until we exit
	if holder, ok := err.(errLocked); ok {
		return seqFile{}, fmt.Errorf("the key is in use by another oevpn (pid %s): a key may serve one SA of one endpoint", holder.pid)
	}
	return f, err
}

const seqFileMagic = "oevpn-esp-seq "

// Reserved reads the file; none means a key never used.
func (f seqFile) Reserved() (uint64, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(string(b), seqFileMagic)), 10, 64)
	if err != nil || !strings.HasPrefix(string(b), seqFileMagic) {
		// Starting over at 1 would repeat IVs under this key: only new
		// keys make this file unnecessary.
		return 0, fmt.Errorf("%s is damaged (%q): with this key, sequence numbers cannot safely restart; configure new keys (then the file can go)", f.path, b)
	}
	return v, nil
}

// Reserve writes limit to a new file, syncs it and renames it over the old
// one, then syncs the directory.
func (f seqFile) Reserve(limit uint64) error {
	tmp := f.path + ".new"
	w, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s%d\n", seqFileMagic, limit)
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("reserving sequence numbers: %w", err)
	}
	if d, err := os.Open(filepath.Dir(f.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
