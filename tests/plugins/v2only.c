/* v2only: a plugin built for a future ABI 2 only; it exports lh_plugin_v2 and not lh_plugin_v1.
 * The hub must say which ABI it was built for rather than "not a plugin". */
#include <stddef.h>
#include <livehub/plugin.h>

LH_EXPORT const void *lh_plugin_v2(void);
LH_EXPORT const void *lh_plugin_v2(void)
{
    return NULL; /* an ABI 2 descriptor would be here; the hub must never call this */
}
