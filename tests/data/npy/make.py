"""Regenerates the small .npy files test_npy reads: written by numpy itself, so the
reader is checked against the format as numpy produces it (versions 1.0, 2.0, 3.0)."""
import numpy as np
from numpy.lib import format as F

a = np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1.0
np.save("f32_2x3_v1.npy", a)
np.save("f16_4_v1.npy", np.array([1.0, -2.5, 65504.0, 2**-24], dtype=np.float16))
np.save("i32_2x2x2_v1.npy", np.arange(-4, 4, dtype=np.int32).reshape(2, 2, 2))
for v in [(2, 0), (3, 0)]:
    with open("f32_1x1x2x3_v%d.npy" % v[0], "wb") as f:
        F.write_array(f, a.reshape(1, 1, 2, 3), version=v)
np.save("f32_big_endian.npy", a.astype(">f4"))
np.save("f32_fortran.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
