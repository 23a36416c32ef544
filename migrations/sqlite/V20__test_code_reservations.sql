-- Failures of a fixed test code reserved by guesses being compared with it (API.md §17.3):
-- a guess reserves one before it is compared, so guesses in flight together never compare
-- more often than the budget allows. A right guess gives its reservation back, a wrong one
-- keeps it as a failure; reservations a verify never settled (it ended first) lapse at
-- reserved_until, which each new reservation moves on. In step with
-- migrations/postgres/V20__test_code_reservations.sql.
ALTER TABLE test_recipients ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE test_recipients ADD COLUMN reserved_until INTEGER;
