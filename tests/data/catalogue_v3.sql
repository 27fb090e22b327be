-- A catalogue as written by the schema of format 3 (user_version 3), before the
-- heads' key/BPM/type estimates: hashes, a star and a collection to keep.
PRAGMA user_version = 3;
BEGIN TRANSACTION;
CREATE TABLE collection_items (
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            content_hash TEXT NOT NULL,
            added_at REAL NOT NULL,
            PRIMARY KEY (collection_id, content_hash)
        );
INSERT INTO "collection_items" VALUES(1,'00000000000000000000000000000003',1796013202.0);
CREATE TABLE collections (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL
        );
INSERT INTO "collections" VALUES(1,'warm pads',1796013201.0);
CREATE TABLE favourites (content_hash TEXT PRIMARY KEY, added_at REAL NOT NULL);
INSERT INTO "favourites" VALUES('00000000000000000000000000000001',1796013200.0);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('format_version','1');
INSERT INTO "meta" VALUES('catalogue_id','"222cecf989e546b981b0debfde243dd9"');
INSERT INTO "meta" VALUES('model_id','"fake-model-1"');
INSERT INTO "meta" VALUES('checkpoint','null');
INSERT INTO "meta" VALUES('model_config','{"method": "fake"}');
INSERT INTO "meta" VALUES('subspaces','["invariant"]');
INSERT INTO "meta" VALUES('dims','{"invariant": 4}');
INSERT INTO "meta" VALUES('vec_seq','6');
CREATE TABLE problems (
            path TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL
        );
INSERT INTO "problems" VALUES('/music/locked','folder','cannot read folder: Permission denied');
CREATE TABLE tracks (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            duration REAL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'pending', 'deleted')),
            error TEXT,
            model_id TEXT,
            vec_seq INTEGER NOT NULL DEFAULT 0,
            scanned_at REAL
        , via, content_hash TEXT);
INSERT INTO "tracks" VALUES(1,'/music/kick.wav',1000,1000000000000000000,1.5,'ok',NULL,'fake-model-1',1,1.79601319903411173824e+09,NULL,'00000000000000000000000000000001');
INSERT INTO "tracks" VALUES(2,'/music/snare.wav',1001,1000000000000000001,2.5,'deleted',NULL,NULL,6,1.79601319903444719312e+09,NULL,NULL);
INSERT INTO "tracks" VALUES(3,'/music/pad é.flac',1002,1000000000000000002,3.5,'ok',NULL,'fake-model-1',3,1.79601319903456664085e+09,NULL,'00000000000000000000000000000003');
INSERT INTO "tracks" VALUES(4,'/music/loop.wav',1003,1000000000000000003,4.5,'ok',NULL,'fake-model-1',4,1796013199.03468,NULL,'00000000000000000000000000000004');
INSERT INTO "tracks" VALUES(5,'/music/bad.wav',3,5,NULL,'error','cannot decode',NULL,5,1.79601319903477931027e+09,NULL,'00000000000000000000000000000005');
CREATE TABLE vectors (
            track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
            subspace TEXT NOT NULL,
            vec BLOB NOT NULL,
            PRIMARY KEY (track_id, subspace)
        );
INSERT INTO "vectors" VALUES(1,'invariant',X'47FE3E3E44AD48BE4936733FD1591F3E');
INSERT INTO "vectors" VALUES(3,'invariant',X'537DE4BEE36D4DBF8E5DCABE2BAFD63C');
INSERT INTO "vectors" VALUES(4,'invariant',X'27BB58BFEA28A3BD5B47E8BEC98488BE');
CREATE INDEX tracks_status ON tracks(status);
CREATE INDEX tracks_vec_seq ON tracks(vec_seq);
CREATE INDEX tracks_content_hash ON tracks(content_hash);
CREATE INDEX collection_items_hash ON collection_items(content_hash);
COMMIT;
