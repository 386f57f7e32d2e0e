-- Listing cost that does not grow with the table.
--
-- The jobs board lists open jobs newest first. Its index now ends with the list's whole
-- order (created_at_ms, job_id), so each status's newest jobs are read in index order and
-- the first page costs the same with a hundred open jobs as with a hundred thousand.
DROP INDEX jobs_board;
CREATE INDEX jobs_board ON jobs (status, created_at_ms, job_id);

-- The unfiltered tool list's total_count (active public tools) is kept in a counter that a
-- trigger moves with every insert, delete and change of status or visibility, in the same
-- transaction; counting the rows cost O(rows) per page.
CREATE TABLE listing_counts (
    listing  TEXT PRIMARY KEY,
    n        BIGINT NOT NULL
);
INSERT INTO listing_counts (listing, n)
    SELECT 'public_tools', COUNT(*) FROM products WHERE status = 'active' AND is_private = 0;
CREATE FUNCTION products_public_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta BIGINT := 0;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.status = 'active' AND OLD.is_private = 0 THEN
            delta := delta - 1;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.status = 'active' AND NEW.is_private = 0 THEN
            delta := delta + 1;
        END IF;
    END IF;
    IF delta <> 0 THEN
        UPDATE listing_counts SET n = n + delta WHERE listing = 'public_tools';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER products_public_count AFTER INSERT OR DELETE OR UPDATE OF status, is_private
    ON products FOR EACH ROW EXECUTE FUNCTION products_public_count();
