package kernels

import (
	"bufio"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// initramfs is the content of a cpio archive, by path inside it. Parent
// directories are added when it is written.
type initramfs struct {
	files map[string]entry
}

type entry struct {
	mode   uint32 // type and permission bits, as in stat(2)
	data   []byte // a regular file's content or a symlink's target
	source string // a regular file's content read from the host at write time
	rdev   [2]uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

func newInitramfs() *initramfs { return &initramfs{files: map[string]entry{}} }

func (r *initramfs) dir(p string) { r.files[clean(p)] = entry{mode: sIFDIR | 0o755} }
func (r *initramfs) file(p string, b []byte, perm uint32) {
	r.files[clean(p)] = entry{mode: sIFREG | perm, data: b}
}
func (r *initramfs) hostFile(p, src string, perm uint32) {
	r.files[clean(p)] = entry{mode: sIFREG | perm, source: src}
}
func (r *initramfs) charDev(p string, major, minor uint32) {
	r.files[clean(p)] = entry{mode: sIFCHR | 0o600, rdev: [2]uint32{major, minor}}
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// hostExecutable adds the host's executable at p, and, when it is linked
// dynamically, its ELF interpreter and the shared libraries it needs
// (found in the host's library directories), each at its host path.
func (r *initramfs) hostExecutable(p, src string) error {
	r.hostFile(p, src, 0o755)
	seen := map[string]bool{}
	var add func(file string) error
	add = func(file string) error {
		f, err := elf.Open(file)
		if err != nil {
			return fmt.Errorf("read %s: %w", file, err)
		}
		defer f.Close()
		var needs []string
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				b, err := io.ReadAll(prog.Open())
				if err != nil {
					return fmt.Errorf("read %s interpreter: %w", file, err)
				}
				needs = append(needs, strings.TrimRight(string(b), "\x00"))
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("read %s libraries: %w", file, err)
		}
		for _, lib := range libs {
			found := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
					found = filepath.Join(d, lib)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("%s needs %s, not found in %v", file, lib, libDirs)
			}
			needs = append(needs, found)
		}
		for _, n := range needs {
			if seen[n] {
				continue
			}
			seen[n] = true
			r.hostFile(n, n, 0o755)
			if err := add(n); err != nil {
				return err
			}
		}
		return nil
	}
	return add(src)
}

// libDirs are where the dynamic loader of a Debian amd64 system looks by
// default; libraries are put there in the initramfs too.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// writeTo writes the archive as a gzipped cpio "newc" archive, the format
// the kernel unpacks into its rootfs (Documentation/driver-api/early-userspace/buffer-format.rst).
func (r *initramfs) writeTo(w io.Writer) error {
	for p := range r.files {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := r.files[d]; !ok {
				r.dir(d)
			}
		}
	}
	names := make([]string, 0, len(r.files))
	for p := range r.files {
		names = append(names, p)
	}
	slices.Sort(names) // parents before children
	zw := gzip.NewWriter(w)
	bw := bufio.NewWriterSize(zw, 1<<20)
	ino := uint32(1)
	for _, p := range names {
		e := r.files[p]
		data := e.data
		if e.source != "" {
			b, err := os.ReadFile(e.source)
			if err != nil {
				return fmt.Errorf("initramfs %s: %w", p, err)
			}
			data = b
		}
		writeCpio(bw, ino, p, e, data)
		ino++
	}
	writeCpio(bw, 0, "TRAILER!!!", entry{}, nil)
	if err := bw.Flush(); err != nil { // reports any write error before it
		return err
	}
	return zw.Close()
}

// writeCpio writes one entry; w keeps the first write error for Flush.
func writeCpio(w *bufio.Writer, ino uint32, name string, e entry, data []byte) {
	nlink := uint32(1)
	if e.mode&sIFDIR == sIFDIR {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, len(data), 0, 0, e.rdev[0], e.rdev[1], len(name)+1, 0)
	w.WriteString(hdr)
	w.WriteString(name)
	w.WriteByte(0)
	pad(w, len(hdr)+len(name)+1)
	w.Write(data)
	pad(w, len(data))
}

func pad(w *bufio.Writer, n int) {
	for ; n%4 != 0; n++ {
		w.WriteByte(0)
	}
}
