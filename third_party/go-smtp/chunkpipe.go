package smtp

import (
	"io"
	"sync"
)

// chunkPipe carries BDAT chunks from the connection to the backend's Data
// reader (smtpgate patch 5). It is io.Pipe with one addition, wait: the
// connection can wait until the reader has taken everything written and
// come back for more (or stopped), so that the reply to a chunk reflects
// what the backend made of it. A reader that processes what it has
// before it reads again (bufio.Reader.ReadSlice does) has then seen the
// whole chunk.
type chunkPipe struct {
	mu      sync.Mutex
	cond    sync.Cond
	data    []byte // written, not yet read
	wantsIn bool   // the reader is blocked in Read with nothing to read
	werr    error  // the writer closed (io.EOF or its error)
	rerr    error  // the reader closed
}

func newChunkPipe() *chunkPipe {
	p := &chunkPipe{}
	p.cond.L = &p.mu
	return p
}

// Read is the reader's side (the backend's Data).
func (p *chunkPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.data) == 0 {
		if p.rerr != nil {
			return 0, io.ErrClosedPipe
		}
		if p.werr != nil {
			return 0, p.werr
		}
		p.wantsIn = true
		p.cond.Broadcast()
		p.cond.Wait()
	}
	p.wantsIn = false
	n := copy(b, p.data)
	p.data = p.data[n:]
	if len(p.data) == 0 {
		p.cond.Broadcast()
	}
	return n, nil
}

// Write blocks until the reader has taken all of b or closed its side.
func (p *chunkPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.werr != nil {
		return 0, io.ErrClosedPipe
	}
	if p.rerr != nil {
		return 0, p.rerr
	}
	p.data = b
	p.cond.Broadcast()
	for len(p.data) > 0 && p.rerr == nil {
		p.cond.Wait()
	}
	n := len(b) - len(p.data)
	p.data = nil
	if n < len(b) {
		return n, p.rerr
	}
	return n, nil
}

// wait blocks until the reader has asked for more input after taking
// everything written, or closed its side; it returns the reader's error.
func (p *chunkPipe) wait() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.rerr == nil && !(p.wantsIn && len(p.data) == 0) {
		p.cond.Wait()
	}
	return p.rerr
}

// CloseWithError closes the writer's side: the reader gets err after the
// data written so far, io.EOF for nil.
func (p *chunkPipe) CloseWithError(err error) {
	if err == nil {
		err = io.EOF
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.werr == nil {
		p.werr = err
	}
	p.cond.Broadcast()
}

// Close closes the writer's side: the reader gets io.EOF.
func (p *chunkPipe) Close() error {
	p.CloseWithError(nil)
	return nil
}

// closeRead closes the reader's side: a pending and every later Write
// returns err (io.ErrClosedPipe for nil).
func (p *chunkPipe) closeRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rerr == nil {
		p.rerr = err
	}
	p.cond.Broadcast()
}
