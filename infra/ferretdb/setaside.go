package main

// FerretDB v1 opens every *.sqlite file of its directory at start and reads its metadata table
// (_ferretdb_collections) from each; one file without that table fails the whole start
// ("failed to construct handler: ... no such table: _ferretdb_collections"), and with it every
// service. Such a file holds no collection FerretDB could serve. It comes from a database file
// created and killed before FerretDB wrote its metadata table (FerretDB creates the file, then
// the table), or from a process that opened a just-dropped database's path with SQLite's default
// open-or-create (the `_id` indexer did; it opens with mode=rw now). The launcher moves such
// files, with their -wal and -shm, into quarantine/ before FerretDB starts, and says so.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

const (
	// metadataTable is where FerretDB v1 (SQLite backend) lists a database's collections.
	metadataTable = "_ferretdb_collections"
	// quarantineDir is the subdirectory of the SQLite directory receiving set-aside files;
	// FerretDB only opens the directory's own *.sqlite files.
	quarantineDir = "quarantine"
)

// errNoMetadata: the file is not a FerretDB database.
var errNoMetadata = errors.New("no " + metadataTable + " table: not a FerretDB database")

// checkDatabaseFile returns errNoMetadata (wrapped) if the file is readable as SQLite but lacks
// FerretDB's metadata table, or is not an SQLite database at all; another error if it could not
// be read (then nothing is known about it). It never creates the file (mode=rw) and reads the
// -wal too, so a table whose creation is only in the WAL after a kill counts as present.
func checkDatabaseFile(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=rw&_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	var n int
	err = db.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, metadataTable,
	).Scan(&n)
	var sqlErr *sqlite.Error
	if errors.As(err, &sqlErr) && sqlErr.Code()&0xff == sqlite3.SQLITE_NOTADB {
		return fmt.Errorf("%w (%v)", errNoMetadata, err)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		return errNoMetadata
	}
	return nil
}

// setAsideStrayFiles moves every *.sqlite file of dir without FerretDB metadata (and its -wal,
// -shm) into dir/quarantine/, logging one warning per file, and returns the paths moved. A file
// that could not be checked stays, with a warning naming it: FerretDB's start decides then.
func setAsideStrayFiles(ctx context.Context, dir string, logger *slog.Logger) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.sqlite"))
	if err != nil {
		return nil, err
	}
	var moved []string
	for _, path := range files {
		err := checkDatabaseFile(ctx, path)
		if err == nil {
			continue
		}
		if !errors.Is(err, errNoMetadata) {
			logger.Warn("could not check a database file; leaving it for FerretDB",
				"file", path, "error", err)
			continue
		}
		info, statErr := os.Stat(path)
		size := int64(-1)
		if statErr == nil {
			size = info.Size()
		}
		to, mvErr := setAside(dir, path)
		if mvErr != nil {
			return moved, fmt.Errorf("setting aside %s (%v): %w", path, err, mvErr)
		}
		logger.Warn("set aside a database file without FerretDB metadata; the store starts without it",
			"file", path, "bytes", size, "moved_to", to, "reason", err.Error())
		moved = append(moved, path)
	}
	return moved, nil
}

// setAside moves path and its -wal and -shm into dir/quarantine/ under a name that never
// overwrites an earlier one, and returns the new path of the main file.
func setAside(dir, path string) (string, error) {
	qdir := filepath.Join(dir, quarantineDir)
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		return "", err
	}
	base := filepath.Base(path) + "." + time.Now().UTC().Format("20060102T150405.000000000Z")
	to := filepath.Join(qdir, base)
	// the -wal and -shm first: a -wal left beside a moved main file would be read into the next
	// database of that name only if its header matched, but keep the pair together anyway
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Rename(path+suffix, to+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
	}
	if err := os.Rename(path, to); err != nil {
		return "", err
	}
	return to, nil
}

// lockDir takes an exclusive lock on dir for the life of the process, so that no second
// launcher checks (and sets aside) files that a running FerretDB is creating.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".launcher.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another ferretdb launcher uses %s", dir)
		}
		return nil, err
	}
	return f, nil
}

// suspectFiles names the *.sqlite files of dir that FerretDB could not open, after its start
// failed: each with what is wrong with it, for the log (and `./dev up`) to point at.
func suspectFiles(ctx context.Context, dir string) map[string]string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
	out := map[string]string{}
	for _, path := range files {
		if err := checkDatabaseFile(ctx, path); err != nil {
			out[path] = strings.TrimSpace(err.Error())
		}
	}
	return out
}
