package main

// FerretDB v1's SQLite backend indexes `_id` as `_ferretdb_sjson->"_id"` but looks documents up
// by `_ferretdb_sjson->'$._id'`. SQLite matches index expressions by their text, so the index is
// never used: every find, update and delete by `_id` scans the whole table (EXPLAIN QUERY PLAN
// says SCAN), and writes get slower with every document stored (measured: an update by `_id`
// took 6.7 ms at 100 documents, 43 ms at 2,000). The indexer below adds, to every collection
// table, an index on the expression the queries use. It is invisible to FerretDB (which lists
// the indexes it created from its own metadata) and is dropped with the table.

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

	_ "modernc.org/sqlite" // the driver FerretDB itself uses
)

// idIndexSuffix names the added index: "<table>" + idIndexSuffix.
const idIndexSuffix = "__id_path"

type fileStamp struct {
	main, wal time.Time
	size      int64
}

func stampOf(path string) (fileStamp, bool) {
	info, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, false
	}
	s := fileStamp{main: info.ModTime(), size: info.Size()}
	if wal, err := os.Stat(path + "-wal"); err == nil {
		s.wal = wal.ModTime()
		s.size += wal.Size()
	}
	return s, true
}

// indexIDs adds the missing `_id` path indexes in every database of dir, then again whenever a
// database file changes, until ctx ends.
func indexIDs(ctx context.Context, dir string, every time.Duration, logger *slog.Logger) {
	seen := map[string]fileStamp{}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
		for _, path := range files {
			stamp, ok := stampOf(path)
			if !ok || seen[path] == stamp {
				continue
			}
			if err := indexFile(ctx, path); err != nil {
				logger.Debug("id index: will retry", "file", path, "error", err)
				continue
			}
			seen[path] = stamp
		}
		for path := range seen {
			if _, err := os.Stat(path); err != nil {
				delete(seen, path)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// indexFile creates the `_id` path index on each collection table of one database file that
// lacks it. It only reads unless an index is missing. It never creates the file: the path comes
// from a glob and FerretDB may have dropped (removed) the database since, and SQLite's default
// open creates a missing file, which left an empty database file without FerretDB's metadata
// behind, and FerretDB refuses to start with one (see setaside.go). Nor does it write to a file
// that was dropped, or dropped and created anew, after it was opened.
func indexFile(ctx context.Context, path string) error {
	before, err := inodeOf(path)
	if err != nil {
		return err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=rw&_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	rows, err := db.QueryContext(ctx, `
		SELECT t.name FROM sqlite_master t
		WHERE t.type = 'table' AND t.name NOT LIKE '\_ferretdb\_%' ESCAPE '\'
		AND NOT EXISTS (
			SELECT 1 FROM sqlite_master i WHERE i.type = 'index' AND i.name = t.name || ?
		)`, idIndexSuffix)
	if err != nil {
		return err
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(tables) == 0 {
		return nil
	}

	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	// holding the write lock now; the file must still be the one opened (same inode, still linked)
	if after, err := inodeOf(path); err != nil || after != before {
		return errors.New("the database file was removed or replaced")
	}
	for _, table := range tables {
		q := fmt.Sprintf(
			`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`,
			table+idIndexSuffix, table,
		)
		if _, err := conn.ExecContext(ctx, q); err != nil {
			// the table may have been dropped meanwhile
			if strings.Contains(err.Error(), "no such table") {
				continue
			}
			return err
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return err
	}
	committed = true
	return nil
}

// inodeOf identifies the file at path (device and inode).
func inodeOf(path string) ([2]uint64, error) {
	info, err := os.Stat(path)
	if err != nil {
		return [2]uint64{}, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return [2]uint64{}, errors.New("no inode")
	}
	return [2]uint64{uint64(st.Dev), st.Ino}, nil
}
