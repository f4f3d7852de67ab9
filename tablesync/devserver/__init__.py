"""The local Supabase-compatible backend (``tablesync devserver``) on a real PostgreSQL."""
