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
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
// lacks it. It only reads unless an index is missing.
func indexFile(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
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
	for _, table := range tables {
		q := fmt.Sprintf(
			`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`,
			table+idIndexSuffix, table,
		)
		if _, err := db.ExecContext(ctx, q); err != nil {
			// the table may have been dropped meanwhile
			if strings.Contains(err.Error(), "no such table") {
				continue
			}
			return err
		}
	}
	return nil
}
