/* livehub SDK: everything a plugin or embedding program includes. */
#ifndef LIVEHUB_H
#define LIVEHUB_H
#include "livehub/error.h"
#include "livehub/codec.h"
#include "livehub/event.h"
#include "livehub/token.h"
#include "livehub/plugin.h"
#endif
