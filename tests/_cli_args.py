"""Command lines shared by the tests that run ``wsi-tile`` and ``wsi-extract`` on small slides."""

#: wsi-tile on small test slides: one worker, 64 px patches, small tissue pieces kept.
TILE_SMALL: tuple[str, ...] = ("--workers", "1", "--progress=false", "--grid.patch_size_px", "64")
TILE_SMALL += ("--tissue.min_tissue_area_um2", "100")

#: wsi-extract on the CPU with random weights, whatever the tiling µm/px.
EXTRACT_CPU: tuple[str, ...] = ("--random_init", "--device", "cpu", "--progress=false")
EXTRACT_CPU += ("--allow_mpp_mismatch", "--batch_size", "32")
