@ 0x00000007
i 2244666
o 127
l <S2244666AbmLFR4moGc0k/20261206175642Z+1@mail.example.org>
s error <> <> 1
r           local root root@mail.example.org 65534
N ORCPT=rfc822;root INRCPT=rfc822;root INFROM=rfc822;<>
m
Received: ("??"@vm) by mail.example.org id S2244666AbmLFR4moGc0k;
	Sun, 6 Dec 2026 17:56:42 +0000
From:	<>
Subject: t
Message-Id: <S2244666AbmLFR4moGc0k/20261206175642Z+1@mail.example.org>
To:	unlisted-recipients:; (no To-header on input)
Date:	Sun, 6 Dec 2026 17:56:42 +0000

