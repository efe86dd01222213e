/* calib_version.c — the calib module's version string (keeps the library non-empty). */
const char *efc_calib_version(void);
const char *efc_calib_version(void)
{
    return "1";
}
