# The per-line work of a UAPI `set` (wgc/_uapi_set.pyx).
#
# Called from Python only: uapi.handle_set runs apply_lines on the control
# server's thread with the device's lock held; the parsed prefixes go, a
# batch at a time, to DataPlane.allowed_ips_insert_records (which takes
# Core's mutex once per batch).  A record is RECORD_SIZE bytes: address
# length (4 or 16), prefix length (checked against the family), then 16
# address bytes, an IPv4 address in the first four.

cdef enum:
    RECORD_SIZE = 18
    RECORDS_PER_BATCH = 1024
