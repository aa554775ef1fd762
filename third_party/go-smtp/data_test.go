package smtp

import (
	"bufio"
	"bytes"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"
)

// refDataReader is the byte-at-a-time reader smtpgate's bulk dataReader
// replaced (with PATCHES.md fix 1): the bulk one must give the same bytes,
// the same error and leave the same input unread.
type refDataReader struct {
	r       *bufio.Reader
	state   int
	limited bool
	n       int64
}

func (r *refDataReader) Read(b []byte) (n int, err error) {
	if r.limited {
		if r.n <= 0 {
			return 0, ErrDataTooLarge
		}
		if int64(len(b)) > r.n {
			b = b[0:r.n]
		}
	}
	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.r.UnreadByte()
			c = '\r'
			r.state = stateCR
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			if c == '\r' {
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}
	if r.limited {
		r.n -= int64(n)
	}
	return
}

type dataResult struct {
	out  []byte
	err  error
	rest []byte
}

// readAllWith drains rd with reads of the given sizes, then returns what
// its bufio.Reader has left.
func readAllWith(rd io.Reader, br *bufio.Reader, sizes []int) dataResult {
	var out []byte
	var err error
	for i := 0; ; i++ {
		p := make([]byte, sizes[i%len(sizes)])
		n, e := rd.Read(p)
		out = append(out, p[:n]...)
		if e != nil {
			err = e
			break
		}
		if i > 1<<20 {
			panic("no progress")
		}
	}
	rest, _ := io.ReadAll(br)
	return dataResult{out, err, rest}
}

func compareDataReaders(t *testing.T, in []byte, bufSize int, sizes []int, limit int64, oneByte bool) {
	t.Helper()
	src := func() io.Reader {
		if oneByte {
			return iotest.OneByteReader(bytes.NewReader(in))
		}
		return bytes.NewReader(in)
	}
	br1 := bufio.NewReaderSize(src(), bufSize)
	br2 := bufio.NewReaderSize(src(), bufSize)
	got := readAllWith(&dataReader{r: br1, limited: limit > 0, n: limit}, br1, sizes)
	want := readAllWith(&refDataReader{r: br2, limited: limit > 0, n: limit}, br2, sizes)
	if !bytes.Equal(got.out, want.out) || got.err != want.err || !bytes.Equal(got.rest, want.rest) {
		t.Fatalf("input %q (buf %d, reads %v, limit %d):\n got %q, %v, rest %q\nwant %q, %v, rest %q",
			in, bufSize, sizes, limit, got.out, got.err, got.rest, want.out, want.err, want.rest)
	}
}

var dataSeeds = []string{
	"Subject: x\r\n\r\nbody\r\n.\r\n",
	"..dot\r\n.\r\nNEXT COMMAND\r\n",
	"a\r\n.\rb\r\n.\r\n",
	"a\r\r\n.\r\n",
	"bare\nlf\n.\n.\r\n",
	"bare\rcr\r.\r\n\r\n.\r\n",
	".\r\n",
	"\r\n.\r\n",
	"no end",
	"x\r\n..\r\n.\r\r\n.\r\n",
}

func TestDataReaderMatchesByteReader(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte(".\r\nab ")
	for i := 0; i < 20000; i++ {
		var in []byte
		if i < len(dataSeeds) {
			in = []byte(dataSeeds[i])
		} else {
			in = make([]byte, rng.Intn(60))
			for j := range in {
				in[j] = alphabet[rng.Intn(len(alphabet))]
			}
		}
		sizes := []int{1 + rng.Intn(8), 1 + rng.Intn(64)}
		var limit int64
		if rng.Intn(3) == 0 {
			limit = int64(rng.Intn(40))
		}
		compareDataReaders(t, in, 16+rng.Intn(32), sizes, limit, rng.Intn(2) == 0)
	}
}

func FuzzDataReader(f *testing.F) {
	for _, s := range dataSeeds {
		f.Add([]byte(s), uint8(3), uint8(7), uint16(0), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, s1, s2 uint8, limit uint16, oneByte bool) {
		compareDataReaders(t, in, 16+int(s1%64), []int{1 + int(s1), 1 + int(s2)}, int64(limit), oneByte)
	})
}

// benchMessage is a 100 KB message of 76-character lines, a few of them
// dot-stuffed, ending in the terminator.
func benchMessage() []byte {
	var b bytes.Buffer
	line := bytes.Repeat([]byte("x"), 74)
	for b.Len() < 100<<10 {
		if b.Len()%7 == 0 {
			b.WriteString("..")
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

func benchmarkDataReader(b *testing.B, mk func(*bufio.Reader) io.Reader) {
	msg := benchMessage()
	src := bytes.NewReader(msg)
	br := bufio.NewReaderSize(src, 4096)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(msg)
		br.Reset(src)
		r := mk(br)
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	}
}

// BenchmarkDataReader compares the bulk reader with the byte-at-a-time
// one it replaced (PATCHES.md 2).
func BenchmarkDataReader(b *testing.B) {
	b.Run("bulk", func(b *testing.B) {
		benchmarkDataReader(b, func(br *bufio.Reader) io.Reader { return &dataReader{r: br} })
	})
	b.Run("byte-at-a-time", func(b *testing.B) {
		benchmarkDataReader(b, func(br *bufio.Reader) io.Reader { return &refDataReader{r: br} })
	})
}
