package main

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newDatabase makes a database file as FerretDB does: WAL mode, then its metadata table.
func newDatabase(t *testing.T, path string, keepOpen bool) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(wal)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`CREATE TABLE "_ferretdb_collections" (name TEXT NOT NULL UNIQUE, table_name TEXT NOT NULL UNIQUE, settings TEXT NOT NULL) STRICT`,
		`CREATE TABLE "devices_1" (_ferretdb_sjson TEXT)`,
		`INSERT INTO "_ferretdb_collections" VALUES ('devices', 'devices_1', '{}')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if keepOpen {
		t.Cleanup(func() { db.Close() })
	} else if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// emptyDatabase is what FerretDB leaves when killed between creating a file and its metadata
// table: SQLite's first page, WAL mode, no table (4,096 bytes).
func emptyDatabase(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(wal)")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestTheIndexerNeverCreatesADroppedDatabaseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dropped.sqlite")
	if err := indexFile(context.Background(), path); err == nil {
		t.Error("indexing a missing file succeeded")
	}
	if exists(path) {
		t.Fatalf("%s was created", path)
	}
}

func TestTheIndexerStillIndexesAnExistingDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sqlite")
	newDatabase(t, path, false)
	if err := indexFile(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	db, _ := sql.Open("sqlite", "file:"+path+"?mode=ro")
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'devices_1__id_path'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("index count %d, error %v", n, err)
	}
}

func TestFilesWithoutFerretDBMetadataAreSetAsideAndDatabasesStay(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "ns_greenit_intake.sqlite")
	newDatabase(t, good, false)

	// killed right after FerretDB wrote its metadata table: the table is only in the WAL
	live := filepath.Join(t.TempDir(), "live.sqlite")
	newDatabase(t, live, true)
	inWAL := filepath.Join(dir, "ns_greenit_allocation.sqlite")
	copyFile(t, live, inWAL)
	copyFile(t, live+"-wal", inWAL+"-wal")
	if err := checkDatabaseFile(context.Background(), inWAL); err != nil {
		t.Fatalf("metadata only in the WAL not seen: %v", err)
	}

	stray := filepath.Join(dir, "ns_greenit_recycling.sqlite")
	emptyDatabase(t, stray)
	if info, _ := os.Stat(stray); info.Size() != 4096 {
		t.Fatalf("stray file is %d bytes, want 4096 as in the incident", info.Size())
	}
	if err := os.WriteFile(stray+"-wal", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "ns_greenit_diagnostics.sqlite")
	if err := os.WriteFile(zero, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "ns_other.sqlite")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 400)), 0o644); err != nil {
		t.Fatal(err)
	}

	var logged strings.Builder
	logger := slog.New(slog.NewTextHandler(&logged, nil))
	moved, err := setAsideStrayFiles(context.Background(), dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 3 {
		t.Errorf("moved %v, want the stray, empty and garbage files", moved)
	}
	for _, path := range []string{good, inWAL} {
		if !exists(path) {
			t.Errorf("%s was set aside", path)
		}
	}
	for _, path := range []string{stray, stray + "-wal", zero, garbage} {
		if exists(path) {
			t.Errorf("%s is still in the directory", path)
		}
		if !strings.Contains(logged.String(), "file="+strings.TrimSuffix(path, "-wal")+" ") {
			t.Errorf("no log line names %s:\n%s", path, logged.String())
		}
	}
	for _, path := range []string{stray, zero, garbage} {
		kept, _ := filepath.Glob(filepath.Join(dir, quarantineDir, filepath.Base(path)+".*Z"))
		if len(kept) != 1 {
			t.Errorf("quarantine holds %v for %s", kept, path)
		}
	}
	if !strings.Contains(logged.String(), "set aside a database file without FerretDB metadata") {
		t.Errorf("log: %s", logged.String())
	}

	// a second start finds nothing more to set aside
	again, err := setAsideStrayFiles(context.Background(), dir, logger)
	if err != nil || len(again) != 0 {
		t.Errorf("second pass moved %v (%v)", again, err)
	}
}

func TestASecondLauncherOnTheSameDirectoryIsRefused(t *testing.T) {
	dir := t.TempDir()
	first, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := lockDir(dir); err == nil || !strings.Contains(err.Error(), "another ferretdb launcher") {
		t.Fatalf("second lock: %v", err)
	}
}
