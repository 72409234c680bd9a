package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
)

// Names and limits of the [OpFiles] archive; see [Client.Files] for its layout.
const (
	// FilesSkippedName is the entry holding the one-line reason a path was skipped.
	FilesSkippedName = ".tp-skipped"
	// FilesErrorsName is the entry listing, one per line, files that could not be sent.
	FilesErrorsName = ".tp-errors"
	// MaxFilesPaths is the largest number of paths one [OpFiles] request may name.
	MaxFilesPaths = 64
	// DefaultFilesMaxBytes is the per-path byte limit when [Request.MaxBytes] is 0.
	DefaultFilesMaxBytes = 10 << 20
	// MaxFilesBytes is the largest per-path limit a server honours: it holds the files of one
	// path in memory before sending them, so a larger [Request.MaxBytes] is reduced to this.
	MaxFilesBytes = 64 << 20
)

// Files asks the server for the regular files below each of paths (absolute, clean
// paths other than "/", at most [MaxFilesPaths]) and returns them as a tar archive.
// maxBytes bounds the bytes sent for one path; 0 means the server's default,
// [DefaultFilesMaxBytes]. Failures reported by the server are *RemoteError values.
//
// The archive is plain (uncompressed) tar and holds only regular files, with their
// permission bits. A file at relative path rel below the path at index i of paths is
// named "i/rel"; a path that is itself a regular file (a subPath mount) has a single
// entry named "i". Two reserved names carry diagnostics instead of content:
// "i/"+[FilesSkippedName] means the path exceeded the byte limit and nothing else
// was sent for it, and "i/"+[FilesErrorsName] lists problems (unreadable files,
// symbolic links pointing outside the path). Names are never absolute and never
// contain "..", but a careful client checks that anyway.
//
// ctx bounds the whole transfer: cancelling it closes the stream and fails pending
// reads. The caller must Close the returned stream.
func (c *Client) Files(ctx context.Context, paths []string, maxBytes int64) (io.ReadCloser, error) {
	conn, _, err := c.roundTrip(ctx, &Request{Op: OpFiles, Paths: paths, MaxBytes: maxBytes})
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return &filesStream{ctx: ctx, conn: conn, stop: stop}, nil
}

// filesStream is the read side of a files stream; it reports ctx's error once ctx
// has closed the stream.
type filesStream struct {
	ctx  context.Context
	conn net.Conn
	stop func() bool
}

func (f *filesStream) Read(p []byte) (int, error) {
	n, err := f.conn.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && f.ctx.Err() != nil {
		err = f.ctx.Err()
	}
	return n, err
}

func (f *filesStream) Close() error {
	f.stop()
	return f.conn.Close()
}
