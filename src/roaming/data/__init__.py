"""Dataset readers, synthetic fixtures and the HDF5 files that training reads."""
