@ 0x00000007
i 2244655
o 171
l <S2244655AbmLFR4mjWrvP/20261206175642Z+1@mail.example.org>
e "o.hara smith"@example.com
e "o.hara smith"@example.com
s local "o.hara smith"@example.com "o.hara smith"@example.com 1
r           local root root@mail.example.org 65534
N ORCPT=rfc822;root INRCPT=rfc822;root INFROM=rfc822;"o.hara+20smith"@example.com
m
Received: ("??"@vm) by mail.example.org id S2244655AbmLFR4mjWrvP;
	Sun, 6 Dec 2026 17:56:42 +0000
From:	"o.hara smith"@example.com
Subject: t
Message-Id: <S2244655AbmLFR4mjWrvP/20261206175642Z+1@mail.example.org>
To:	unlisted-recipients:; (no To-header on input)
Date:	Sun, 6 Dec 2026 17:56:42 +0000

