"""Labels to numbers: body-composition measurements on the CT's own grid."""
