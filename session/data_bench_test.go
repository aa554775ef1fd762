package session

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// BenchmarkReadMessage measures the DATA path's line reader (bare CR/LF
// rules, header block, body lines) on a 100 KB message: MB/s and
// allocations per message.
func BenchmarkReadMessage(b *testing.B) {
	var msg bytes.Buffer
	msg.WriteString("From: a@example.org\r\nTo: b@example.com\r\nSubject: bench\r\n\tfolded\r\nMessage-ID: <x@example.org>\r\n\r\n")
	for msg.Len() < 100<<10 {
		msg.WriteString("The quick brown fox jumps over the lazy dog, 0123456789 abcdefghijklmnop\r\n")
	}
	in := msg.Bytes()
	s := &Session{st: &Settings{MaxHeaderBytes: 1 << 20}}
	src := bytes.NewReader(in)
	br := bufio.NewReaderSize(src, 64<<10)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(in)
		br.Reset(src)
		if _, _, err := s.readHeader(br); err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := readLine(br); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkSpoolMessage is BenchmarkReadMessage in spool mode: the body
// lines go through the same reader into a spool (memory, or all but 4 KiB
// in the temporary file), which is then replayed once.
func BenchmarkSpoolMessage(b *testing.B) {
	var msg bytes.Buffer
	msg.WriteString("From: a@example.org\r\nTo: b@example.com\r\nSubject: bench\r\n\tfolded\r\nMessage-ID: <x@example.org>\r\n\r\n")
	for msg.Len() < 100<<10 {
		msg.WriteString("The quick brown fox jumps over the lazy dog, 0123456789 abcdefghijklmnop\r\n")
	}
	in := msg.Bytes()
	for _, bc := range []struct {
		name   string
		memory int64
	}{{"memory", 1 << 20}, {"file", 4 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			s := &Session{st: &Settings{MaxHeaderBytes: 1 << 20}}
			dir := b.TempDir()
			src := bytes.NewReader(in)
			br := bufio.NewReaderSize(src, 64<<10)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(in)
				br.Reset(src)
				sp := &spool{max: bc.memory, dir: dir}
				if _, _, err := s.readHeader(br); err != nil {
					b.Fatal(err)
				}
				for {
					line, err := readLine(br)
					if err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
					sp.Write(line)
				}
				if err := sp.finish(); err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, sp.Reader()); err != nil {
					b.Fatal(err)
				}
				sp.Close()
			}
		})
	}
}
