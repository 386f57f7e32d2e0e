-- Listing cost that does not grow with the table.
--
-- The jobs board lists open jobs newest first. Its index now ends with the list's whole
-- order (created_at_ms, job_id), so each status's newest jobs are read in index order and
-- the first page costs the same with a hundred open jobs as with a hundred thousand.
DROP INDEX jobs_board;
CREATE INDEX jobs_board ON jobs (status, created_at_ms, job_id);

-- The unfiltered tool list's total_count (active public tools) is kept in a counter that
-- triggers move with every insert, delete and change of status or visibility, in the same
-- transaction; counting the rows cost O(rows) per page.
CREATE TABLE listing_counts (
    listing  TEXT PRIMARY KEY,
    n        BIGINT NOT NULL
);
INSERT INTO listing_counts (listing, n)
    SELECT 'public_tools', COUNT(*) FROM products WHERE status = 'active' AND is_private = 0;
CREATE TRIGGER products_public_count_insert AFTER INSERT ON products
WHEN NEW.status = 'active' AND NEW.is_private = 0
BEGIN
    UPDATE listing_counts SET n = n + 1 WHERE listing = 'public_tools';
END;
CREATE TRIGGER products_public_count_delete AFTER DELETE ON products
WHEN OLD.status = 'active' AND OLD.is_private = 0
BEGIN
    UPDATE listing_counts SET n = n - 1 WHERE listing = 'public_tools';
END;
CREATE TRIGGER products_public_count_update AFTER UPDATE OF status, is_private ON products
BEGIN
    UPDATE listing_counts
       SET n = n + (NEW.status = 'active' AND NEW.is_private = 0)
                 - (OLD.status = 'active' AND OLD.is_private = 0)
     WHERE listing = 'public_tools';
END;
