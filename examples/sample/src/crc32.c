/* SPDX-License-Identifier: MIT */
/* Copyright (c) 2023-2024 The Tidepool Authors */

/*
 * Table-driven CRC-32, shared with the gauge firmware, which has no room for a
 * 1 KiB table in flash: keep the bitwise fallback below compiling on its own.
 */

#include "crc32.h"

static uint32_t table[256];
static int table_ready;

static void build_table(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		table[i] = c;
	}
	/* XXX: not thread-safe; fine while the CLI is single-threaded. */
	table_ready = 1;
}

uint32_t tp_crc32_update(uint32_t crc, const uint8_t *data, size_t len)
{
	if (!table_ready)
		build_table();
	crc = ~crc;
	for (size_t i = 0; i < len; i++)
		crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
	return ~crc;
}

uint32_t tp_crc32(const uint8_t *data, size_t len)
{
	return tp_crc32_update(0, data, len);
}

#ifdef TP_CRC32_BITWISE
/* Slow path for the firmware build. */
uint32_t tp_crc32_bitwise(const uint8_t *data, size_t len)
{
	uint32_t crc = 0xFFFFFFFFu;
	while (len--) {
		crc ^= *data++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
	}
	return ~crc;
}
#endif
