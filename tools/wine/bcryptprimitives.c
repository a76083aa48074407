/* bcryptprimitives.dll for Wine prefixes that lack ProcessPrng (Debian's Wine 8).
 *
 * Rust's std for Windows (1.78 and later) imports ProcessPrng from bcryptprimitives.dll to
 * fill HashMap keys and the like; a program cross-built with MinGW fails to load under such
 * a Wine. This DLL implements that one export over RtlGenRandom (advapi32's
 * SystemFunction036), the system's own CSPRNG. Built and copied into the prefix's system32
 * by scripts/test.d/20-platforms.sh; used only to run tests under Wine, never shipped. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
