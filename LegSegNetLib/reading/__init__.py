"""Reading CT volumes and their geometry: files and DICOM series in, a `Volume` and its axial slice layout out,
checked to be a CT in Hounsfield units."""
