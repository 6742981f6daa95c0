"""The same crawl with Scrapy and scrapy-redis, configured as their users configure politeness:
per-domain concurrency and a download delay of 1/rate, in each process. Run by bench/crawl/run.py
as `scrapy runspider`, one process per worker; start URLs come from the Redis list CRAWL_START."""

from __future__ import annotations

import os
import re
from urllib.parse import urljoin, urlsplit

import scrapy
from scrapy_redis.spiders import RedisSpider

LINK = re.compile(r'href="([^"]+)"')


class LocalSitesSpider(RedisSpider):
    name = "local-sites"
    redis_key = os.environ.get("CRAWL_START", "crawl:start_urls")

    def make_request_from_data(self, data):  # the start URLs: one download slot per host:port
        url = data.decode() if isinstance(data, bytes) else data
        return scrapy.Request(url, meta={"download_slot": urlsplit(url).netloc})

    def parse(self, response):
        host = urlsplit(response.url).netloc
        for href in LINK.findall(response.text):
            link = urljoin(response.url, href)
            if urlsplit(link).netloc == host:  # Scrapy keys its per-domain slots by host name alone
                yield scrapy.Request(link, meta={"download_slot": host})
