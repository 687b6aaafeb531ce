"""Numbers and labels to files: label maps and .seg.nrrd, measurement tables, overlay pictures, all written
atomically and never over a user's file without asking."""
